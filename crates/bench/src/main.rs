//! `cifar-bench`: CPU training and inference throughput of the project's models, side by side:
//! candle with its stock kernels, candle with the fast kernels of `trainer::kernels`, and
//! PyTorch (`bench/torch_bench.py`) with the same networks, batch sizes and thread count.
//! Every measurement runs in its own child process so each gets its own peak RSS
//! (`getrusage` high-water mark). See `BENCHMARKS.md`, section "CPU speed (issue 4)".
//!
//! ```text
//! cifar-bench [--models lenet,cnn3,vgg6] [--batches 20,64,128] [--threads 2] [--time 3] [--repeat 1]
//!             [--impls stock,fast,torch] [--python .venv-bench/bin/python]
//!             [--epoch] [--epoch-models lenet] [--epoch-impls IMPLS] [--data-dir data]
//!             [--markdown FILE]
//! ```

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use trainer::{train, TrainConfig};

mod flops;
mod peak;

/// Peak resident set size of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as u64
}

/// A comma-separated list, as `--models lenet,cnn3` takes it; blanks dropped.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[derive(Parser)]
#[command(
    name = "cifar-bench",
    about = "candle (stock and fast kernels) vs PyTorch, CPU training and inference",
    after_help = "--repeat N runs each measurement N times, interleaved, and keeps the best \
                  throughputs. Each measurement runs in a child process (`child` / `epoch-child` \
                  subcommands) so it gets its own peak RSS. Run from the repository root.\n\
                  --epoch also times one real-data epoch per --epoch-models and --epoch-impls \
                  (default: --impls), and for the fast kernels the training loop's other costs \
                  (batch assembly, augmentation, metric accumulation, the per-epoch SQLite \
                  write) as shares of that epoch.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Sub>,
    #[command(flatten)]
    driver: DriverArgs,
}

/// The side-by-side table (no subcommand).
#[derive(Args)]
struct DriverArgs {
    #[arg(long, default_value = "lenet,cnn3,vgg6")]
    models: String,
    #[arg(long, default_value = "20,64,128")]
    batches: String,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    time: f64,
    #[arg(long, default_value = "stock,fast,torch")]
    impls: String,
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[arg(long, default_value = ".venv-bench/bin/python")]
    python: String,
    #[arg(long, default_value = "bench/torch_bench.py")]
    script: String,
    /// Also time one real-data epoch per --epoch-models and --epoch-impls.
    #[arg(long)]
    epoch: bool,
    #[arg(long, default_value = "lenet")]
    epoch_models: String,
    #[arg(long, default_value_t = 20)]
    epoch_batch: usize,
    /// Default: --impls.
    #[arg(long, value_name = "IMPLS")]
    epoch_impls: Option<String>,
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Also write the Markdown report to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where both sides run: `cpu`, or `cuda:N` (then `fast` is the trainer on the GPU
    /// and `stock` is left out: the fast kernels are CPU kernels).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The `precision` values measured (fp32, tf32, bf16), each a row.
    #[arg(long, default_value = "fp32")]
    precisions: String,
}

#[derive(Subcommand)]
enum Sub {
    /// One (model, batch, implementation): training then inference throughput, as JSON.
    Child {
        #[arg(long, default_value = "lenet")]
        model: String,
        #[arg(long, default_value_t = 20)]
        batch: usize,
        #[arg(long, default_value_t = 3.0)]
        time: f64,
        #[arg(long = "impl", value_name = "IMPL", default_value = "fast")]
        imp: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value = "fp32")]
        precision: String,
    },
    /// One real-data epoch, as JSON.
    EpochChild {
        #[arg(long, default_value = "lenet")]
        model: String,
        #[arg(long, default_value_t = 20)]
        batch: usize,
        #[arg(long = "impl", value_name = "IMPL", default_value = "fast")]
        imp: String,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value = "fp32")]
        precision: String,
    },
    /// Measured FMA peak in GFLOP/s.
    Peak {
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Where one training step's time goes.
    Profile {
        #[arg(long, default_value = "vgg6")]
        model: String,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long = "impl", value_name = "IMPL", default_value = "fast")]
        imp: String,
    },
    /// Single-thread GEMM throughput for vgg6's convolution shapes.
    Gemm,
    /// Per-layer convolution kernel times.
    Layers {
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Only the layers whose name contains this.
        #[arg(long, default_value = "")]
        only: String,
        #[arg(long, default_value = "gemm,direct")]
        algos: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Sub::Child {
            model,
            batch,
            time,
            imp,
            device,
            precision,
        }) => child(
            &model,
            batch,
            time,
            &imp,
            &Target::parse(&device, &precision)?,
        ),
        Some(Sub::EpochChild {
            model,
            batch,
            imp,
            data_dir,
            device,
            precision,
        }) => epoch_child(
            &model,
            batch,
            &imp,
            &data_dir,
            &Target::parse(&device, &precision)?,
        ),
        Some(Sub::Peak { threads }) => {
            let g = peak::measure(threads, 1.0);
            println!("{}", json!({ "peak_gflops": g }));
            Ok(())
        }
        Some(Sub::Profile {
            model,
            batch,
            steps,
            imp,
        }) => profile(&model, batch, steps, &imp),
        Some(Sub::Gemm) => gemm_bench(),
        Some(Sub::Layers {
            batch,
            reps,
            only,
            algos,
        }) => layers_bench(batch, reps, &only, &list(&algos)),
        None => driver(&cli.driver),
    }
}

/// Where a measurement runs and in which precision.
struct Target {
    device: Device,
    precision: trainer::config::Precision,
}

impl Target {
    fn parse(device: &str, precision: &str) -> Result<Self> {
        Ok(Self {
            device: trainer::device::parse(device)?,
            precision: serde_json::from_value(json!(precision)).with_context(|| {
                format!("--precision {precision:?}: expected fp32, tf32 or bf16")
            })?,
        })
    }
}

/// The configuration measured: `arch` at `batch` in `precision`, the other settings at
/// their defaults.
fn config(arch: &str, batch: usize, precision: trainer::config::Precision) -> TrainConfig {
    TrainConfig {
        arch: arch.to_string(),
        batch_size: batch,
        precision,
        // airnet is timed with its recipe's activation (sweeps/airnet.toml), the others
        // with the tutorial's.
        activation: if arch == "airnet" {
            trainer::config::Activation::Gelu
        } else {
            trainer::config::Activation::Relu
        },
        ..TrainConfig::default()
    }
}

/// A model and its optimiser, built as the trainer builds them for a run.
fn session(cfg: &TrainConfig, device: &Device) -> Result<train::Session> {
    Ok(train::Session::new(cfg, device)?)
}

fn set_impl(imp: &str) -> Result<()> {
    match imp {
        "stock" => trainer::kernels::set_enabled(false),
        "fast" => trainer::kernels::set_enabled(true),
        _ => bail!("unknown implementation {imp:?} (stock, fast)"),
    }
    Ok(())
}

fn random_batch(batch: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    random_batch_on(batch, seed, &Device::Cpu)
}

fn random_batch_on(batch: usize, seed: u64, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..batch * 3 * 32 * 32)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let y: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10u32)).collect();
    Ok((
        Tensor::from_vec(x, (batch, 3, 32, 32), device)?,
        Tensor::from_vec(y, batch, device)?,
    ))
}

/// User + system CPU time of this process, in seconds.
fn process_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `step` once to warm up, then until `secs` have passed (at least 3 times); returns the
/// calls per wall-clock second, the calls and the process CPU seconds per call.
fn timed(secs: f64, mut step: impl FnMut() -> Result<()>) -> Result<(f64, usize, f64)> {
    step()?;
    let (t0, c0) = (Instant::now(), process_cpu_s());
    let mut n = 0usize;
    while n < 3 || t0.elapsed().as_secs_f64() < secs {
        step()?;
        n += 1;
    }
    let cpu = (process_cpu_s() - c0) / n as f64;
    Ok((n as f64 / t0.elapsed().as_secs_f64(), n, cpu))
}

/// One (model, batch, implementation): training then inference throughput.
///
/// On the CPU every step reads its loss and correct count back, as the training loop does
/// there. On a GPU the steps keep them on the device (`train_step_deferred`, as the loop
/// does there) and the clock stops after the device has finished the queued work, so what
/// is timed is the GPU's work, not how fast the host can queue it.
fn child(arch: &str, batch: usize, secs: f64, imp: &str, at: &Target) -> Result<()> {
    set_impl(imp)?;
    let train::Session { model, mut opt, .. } =
        session(&config(arch, batch, at.precision), &at.device)?;
    let (x, y) = random_batch_on(batch, 1, &at.device)?;
    let started = unix_s();
    let on_gpu = !at.device.is_cpu();
    let mut pending = None;
    let (train_rate, train_steps, train_cpu) = timed_on(&at.device, secs, || {
        if on_gpu {
            pending = Some(train::train_step_deferred(
                model.as_ref(),
                &mut opt,
                &x,
                &y,
                0.0,
                0,
            )?);
        } else {
            train::train_step(model.as_ref(), &mut opt, &x, &y, 0.0)?;
        }
        Ok(())
    })?;
    if let Some(p) = pending {
        let last = p.read()?;
        anyhow::ensure!(last.loss.is_finite(), "the loss diverged");
    }
    let (infer_rate, infer_steps, infer_cpu) = timed_on(&at.device, secs / 2.0, || {
        let logits = model.forward_t(&x, false)?;
        let pred = logits.argmax(1)?.to_dtype(DType::U32)?;
        if !on_gpu {
            pred.to_vec1::<u32>()?;
        }
        Ok(())
    })?;
    println!(
        "{}",
        json!({
            "train_img_s": train_rate * batch as f64,
            "infer_img_s": infer_rate * batch as f64,
            "train_steps": train_steps,
            "infer_steps": infer_steps,
            "train_cpu_s_per_img": train_cpu / batch as f64,
            "infer_cpu_s_per_img": infer_cpu / batch as f64,
            "peak_rss_kib": peak_rss_kib(),
            "started_unix_s": started,
            "ended_unix_s": unix_s(),
        })
    );
    Ok(())
}

/// Seconds since the Unix epoch (to line measurements up with `nvidia-smi`'s samples).
fn unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// [`timed`], waiting for `device` to finish its queued work before the clock starts and
/// before it stops (a no-op on the CPU).
fn timed_on(
    device: &Device,
    secs: f64,
    mut step: impl FnMut() -> Result<()>,
) -> Result<(f64, usize, f64)> {
    if device.is_cpu() {
        return timed(secs, step);
    }
    step()?;
    device.synchronize()?;
    let (t0, c0) = (Instant::now(), process_cpu_s());
    let mut n = 0usize;
    while n < 3 || t0.elapsed().as_secs_f64() < secs {
        step()?;
        n += 1;
        if n.is_multiple_of(16) {
            // Keeps the host from queueing far ahead of the clock's stopping point.
            device.synchronize()?;
        }
    }
    device.synchronize()?;
    let cpu = (process_cpu_s() - c0) / n as f64;
    Ok((n as f64 / t0.elapsed().as_secs_f64(), n, cpu))
}

/// CPU time of this thread, in seconds.
fn thread_cpu_s() -> f64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Single-thread GEMM throughput (thread CPU time, so other load matters less) for the
/// shapes of vgg6's convolutions at batch 64.
fn gemm_bench() -> Result<()> {
    // (name, m, n, k, a transposed, b transposed, dst column-major)
    let shapes = [
        ("fwd conv2", 64, 1024, 288, false, false, false),
        ("fwd conv4", 128, 256, 1152, false, false, false),
        ("fwd conv6", 256, 64, 2304, false, false, false),
        ("dx conv2", 288, 1024, 64, true, false, false),
        ("dx conv4", 1152, 256, 128, true, false, false),
        ("dx conv6", 2304, 64, 256, true, false, false),
        ("dwT conv2", 288, 64, 1024, false, true, false),
        ("dwT conv4", 1152, 128, 512, false, true, false),
        ("dwT conv6", 2304, 256, 512, false, true, false),
        ("dwT nat conv2", 288, 64, 1024, false, false, false),
        ("dwT nat conv4", 1152, 128, 512, false, false, false),
        ("dwT nat conv6", 2304, 256, 512, false, false, false),
        ("dwT at conv2", 288, 64, 1024, true, false, false),
        ("dwT cm conv2", 288, 64, 1024, false, true, true),
        ("dwT cm conv4", 1152, 128, 512, false, true, true),
        ("dwT cm conv6", 2304, 256, 512, false, true, true),
        ("dw conv2", 64, 288, 1024, false, true, false),
        ("dw conv4", 128, 1152, 512, false, true, false),
        ("dw conv6", 256, 2304, 512, false, true, false),
        ("dw cm conv2", 64, 288, 1024, false, true, true),
        ("dw cm conv4", 128, 1152, 512, false, true, true),
        ("dw cm conv6", 256, 2304, 512, false, true, true),
        ("fc1 fwd", 64, 1024, 4096, false, true, false),
        ("fc1 fwd yT", 1024, 64, 4096, false, true, true),
        ("fc1 dx", 64, 4096, 1024, false, false, false),
        ("fc1 dw", 1024, 4096, 64, true, false, false),
        ("lenet fc1 fwd", 20, 120, 400, false, true, false),
        ("lenet fc1 fwd yT", 120, 20, 400, false, true, true),
        ("lenet fc1 dx", 20, 400, 120, false, false, false),
        ("lenet fc1 dw", 120, 400, 20, true, false, false),
        ("lenet fwd conv1", 6, 784, 75, false, false, false),
        ("lenet fwd conv2", 16, 100, 150, false, false, false),
        ("square 512", 512, 512, 512, false, false, false),
    ];
    for (name, m, n, k, at, bt, cm) in shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        let (ars, acs) = if at { (1, m as isize) } else { (k as isize, 1) };
        let (brs, bcs) = if bt { (1, k as isize) } else { (n as isize, 1) };
        let (crs, ccs) = if cm { (1, m as isize) } else { (n as isize, 1) };
        let reps = ((2e9 / (2.0 * (m * n * k) as f64)) as usize).max(3);
        let t0 = thread_cpu_s();
        for _ in 0..reps {
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    ccs,
                    crs,
                    false,
                    a.as_ptr(),
                    acs,
                    ars,
                    b.as_ptr(),
                    bcs,
                    brs,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
        }
        let dt = thread_cpu_s() - t0;
        let g = 2.0 * (m * n * k * reps) as f64 / dt / 1e9;
        println!("{name:<16} m {m:5} n {n:5} k {k:5}: {g:6.1} GFLOP/s");
    }
    Ok(())
}

/// Per-layer convolution kernel times (forward, input and weight gradient) for the models'
/// convolution shapes, from the kernels' own profiling spans.
fn layers_bench(batch: usize, reps: usize, only: &str, algos: &[String]) -> Result<()> {
    trainer::kernels::set_enabled(true);
    // (name, c_in, c_out, k, pad, side, input needs a gradient)
    let layers = [
        ("lenet conv1", 3, 6, 5, 0, 32, false),
        ("lenet conv2", 6, 16, 5, 0, 14, true),
        ("cnn3 conv1", 3, 16, 3, 1, 32, false),
        ("cnn3 conv2", 16, 32, 3, 1, 16, true),
        ("cnn3 conv3", 32, 64, 3, 1, 8, true),
        ("vgg6 conv1", 3, 32, 3, 1, 32, false),
        ("vgg6 conv2", 32, 64, 3, 1, 32, true),
        ("vgg6 conv3", 64, 128, 3, 1, 16, true),
        ("vgg6 conv4", 128, 128, 3, 1, 16, true),
        ("vgg6 conv5", 128, 256, 3, 1, 8, true),
        ("vgg6 conv6", 256, 256, 3, 1, 8, true),
    ];
    println!(
        "batch {batch}, {} threads; CPU time of the calling thread per call, GFLOP/s of that",
        trainer::kernels::num_threads()
    );
    for (name, c, o, k, pad, side, xgrad) in layers {
        if !name.contains(only) {
            continue;
        }
        let (x, _) = random_batch(batch, 3)?;
        let x = x
            .narrow(1, 0, 1)?
            .repeat((1, c, 1, 1))?
            .narrow(2, 0, side)?
            .narrow(3, 0, side)?
            .contiguous()?;
        let x = if xgrad {
            candle_core::Var::from_tensor(&x)?.as_tensor().clone()
        } else {
            x
        };
        let w = candle_core::Var::from_tensor(
            &(Tensor::randn(0f32, 0.1, (o, c, k, k), &Device::Cpu)?),
        )?;
        let b = candle_core::Var::zeros(o, DType::F32, &Device::Cpu)?;
        let run = || -> Result<()> {
            let y = trainer::kernels::conv2d(&x, w.as_tensor(), Some(b.as_tensor()), pad, 1)?;
            y.sum_all()?.backward()?;
            Ok(())
        };
        for algo in algos {
            trainer::kernels::set_conv_algorithm(algo)?;
            run()?;
            trainer::kernels::profile::take();
            trainer::kernels::profile::enable(true);
            for _ in 0..reps {
                run()?;
            }
            trainer::kernels::profile::enable(false);
            let side_out = side + 2 * pad - k + 1;
            let gflop = 2.0 * (batch * o * c * k * k * side_out * side_out) as f64 / 1e9;
            let mut line = format!("{name:<12} {algo:<6}");
            let mut es = trainer::kernels::profile::take();
            es.sort_by(|a, b| a.name.cmp(&b.name));
            for e in es {
                if e.name.contains("(in conv)") {
                    continue;
                }
                let short = e.name.trim().replace("conv2d ", "").replace(" grad", "");
                let per = |v: f64| v * 1e3 / e.calls as f64;
                let gf = gflop / (e.cpu / e.calls as f64);
                line += &format!("  {short} {:6.2} ms {gf:4.0} GF/s", per(e.cpu));
            }
            println!("{line}");
        }
    }
    Ok(())
}

/// Where one training step's time goes: forward, backward and update, and each kernel.
fn profile(arch: &str, batch: usize, steps: usize, imp: &str) -> Result<()> {
    set_impl(imp)?;
    let train::Session { model, mut opt, .. } =
        session(&config(arch, batch, Default::default()), &Device::Cpu)?;
    let (x, y) = random_batch(batch, 1)?;
    // Wall and process CPU time of each phase.
    let mut phase = [[0f64; 2]; 3];
    let cpu = process_cpu_s;
    let mark = |ph: &mut [f64; 2], t: Instant, c: f64| {
        ph[0] += t.elapsed().as_secs_f64();
        ph[1] += cpu() - c;
    };
    for i in 0..=steps {
        if i == 1 {
            trainer::kernels::profile::take();
            trainer::kernels::profile::enable(true);
            phase = [[0.0; 2]; 3];
        }
        let (t, c) = (Instant::now(), cpu());
        let logits = model.forward_t(&x, true)?;
        let loss = train::cross_entropy(&logits, &y, 0.0)?;
        loss.to_scalar::<f32>()?;
        mark(&mut phase[0], t, c);
        let (t, c) = (Instant::now(), cpu());
        let grads = loss.backward()?;
        mark(&mut phase[1], t, c);
        let (t, c) = (Instant::now(), cpu());
        opt.step(&grads)?;
        drop(grads);
        mark(&mut phase[2], t, c);
    }
    let ms = |s: f64| s * 1e3 / steps as f64;
    let total = |k: usize| phase.iter().map(|p| p[k]).sum::<f64>();
    println!(
        "wall ms/step {:.2} = forward+loss {:.2} + backward {:.2} + update {:.2}",
        ms(total(0)),
        ms(phase[0][0]),
        ms(phase[1][0]),
        ms(phase[2][0])
    );
    println!(
        "process CPU ms/step {:.2} = forward+loss {:.2} + backward {:.2} + update {:.2}",
        ms(total(1)),
        ms(phase[0][1]),
        ms(phase[1][1]),
        ms(phase[2][1])
    );
    println!(
        "  {:<22} {:>9} {:>9}  calls/step",
        "kernel", "wall ms", "cpu ms"
    );
    let (mut kw, mut kc) = (0.0, 0.0);
    for e in trainer::kernels::profile::take() {
        kw += e.wall;
        kc += e.cpu;
        println!(
            "  {:<22} {:9.2} {:9.2}  {}",
            e.name,
            ms(e.wall),
            ms(e.cpu),
            e.calls / steps as u64
        );
    }
    println!(
        "  {:<22} {:9.2} {:9.2}",
        "(outside kernels)",
        ms(total(0) - kw),
        ms(total(1) - kc)
    );
    Ok(())
}

/// One real-data epoch of `model` (batch `batch`, the default 80/20 split: 40,000 images),
/// through the training loop itself (`trainer::train::Trainer::train_epoch`, as `cifar-sweep`
/// runs it: the loop's batch assembly, progress, statistics reads and the validation pass),
/// timed end to end: reading the cache, the split, building the model, training and
/// validating. `train_s` is the loop's own training time (validation excluded).
fn epoch_child(arch: &str, batch: usize, imp: &str, data_dir: &Path, at: &Target) -> Result<()> {
    set_impl(imp)?;
    let t0 = Instant::now();
    let mut src = trainer::data::DataSource::new(data_dir);
    src.url = String::new();
    let data = trainer::data::load(&src)?;
    let cfg = TrainConfig {
        epochs: 1,
        ..config(arch, batch, at.precision)
    };
    let load_s = t0.elapsed().as_secs_f64();
    let dir = std::env::temp_dir().join(format!("cifar-bench-epoch-{}", std::process::id()));
    let mut opts = train::RunOptions::new(&dir);
    opts.resume = false;
    // One epoch, no mid-epoch checkpoint (a real run writes one a minute at most).
    opts.checkpoint_every = std::time::Duration::from_secs(3600 * 24);
    let res = (|| -> Result<(f64, trainer::metrics::EpochRecord)> {
        let mut t = train::Trainer::new(&cfg, &data, &at.device, &opts)?;
        let t1 = Instant::now();
        match t.train_epoch(1, &mut NoObserver)? {
            train::EpochEnd::Trained(r) => Ok((t1.elapsed().as_secs_f64(), r)),
            train::EpochEnd::Ended(o) => bail!("the epoch ended early: {o:?}"),
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let (loop_s, record) = res?;
    let (train_idx, _valid) = trainer::data::split(&data.train, cfg.valid_fraction, cfg.seed);
    let order = trainer::data::epoch_order(&train_idx, cfg.seed, 0);
    let images = order.len();
    let train_s = images as f64 / record.images_per_sec;
    let epoch_s = t0.elapsed().as_secs_f64();
    let over = if at.device.is_cpu() {
        let norm = trainer::data::Normalization::default();
        Some(loop_overheads(&data.train, &order, batch, &norm)?)
    } else {
        None
    };
    let o = |f: fn(&Overheads) -> f64| over.as_ref().map(f);
    println!(
        "{}",
        json!({
            "images": images,
            "load_s": load_s,
            "train_s": train_s,
            "validation_s": loop_s - train_s,
            "epoch_s": epoch_s,
            "loss": record.train_loss,
            "acc": record.train_acc,
            "valid_acc": record.valid_acc,
            "peak_rss_kib": peak_rss_kib(),
            "plain_batch_s": o(|v| v.plain_batch_s),
            "augmented_batch_s": o(|v| v.augmented_batch_s),
            "metric_s": o(|v| v.metric_s),
            "db_write_s": o(|v| v.db_write_s),
        })
    );
    Ok(())
}

/// The epoch's observer: progress is not shown, nothing stops it.
struct NoObserver;

impl train::Observer for NoObserver {
    fn on_epoch(&mut self, _: &trainer::metrics::EpochRecord) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// The training loop's other costs over one epoch's batches, measured outside the timed
/// epoch (so they do not slow it down).
struct Overheads {
    /// Assembling every batch again without augmentation, back to back (warm caches, unlike
    /// inside the epoch).
    plain_batch_s: f64,
    /// Assembling every batch with augmentation (random crop + flip, seeded per batch as
    /// the trainer does), assembly included.
    augmented_batch_s: f64,
    /// Metric accumulation for every batch: the same candle ops as `trainer::train`'s
    /// accuracy count (argmax, compare, sum, read back) plus the running totals.
    metric_s: f64,
    /// One per-epoch database write: `sweep::store::Backend::record_epoch` on a real file (WAL,
    /// synchronous=FULL, one transaction with its fsyncs), the mean of several.
    db_write_s: f64,
}

fn loop_overheads(
    set: &trainer::data::ImageSet,
    order: &[usize],
    batch: usize,
    norm: &trainer::data::Normalization,
) -> Result<Overheads> {
    let t = Instant::now();
    for chunk in order.chunks(batch) {
        trainer::data::make_batch(set, chunk, norm, None, &Device::Cpu)?;
    }
    let plain_batch_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (i, chunk) in order.chunks(batch).enumerate() {
        let mut rng = trainer::data::SplitMix64::new(i as u64);
        trainer::data::make_batch(set, chunk, norm, Some(&mut rng), &Device::Cpu)?;
    }
    let augmented_batch_s = t.elapsed().as_secs_f64();

    let mut rng = StdRng::seed_from_u64(7);
    let mut logits_for = |n: usize| -> Result<(Tensor, Tensor)> {
        let l: Vec<f32> = (0..n * 10)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..10u32)).collect();
        Ok((
            Tensor::from_vec(l, (n, 10), &Device::Cpu)?,
            Tensor::from_vec(y, n, &Device::Cpu)?,
        ))
    };
    let full = logits_for(batch)?;
    let tail = logits_for(order.len() % batch)?;
    let mut running = trainer::metrics::Running::default();
    let t = Instant::now();
    for chunk in order.chunks(batch) {
        let (logits, y) = if chunk.len() == batch { &full } else { &tail };
        let hits = logits
            .argmax(candle_core::D::Minus1)?
            .eq(y)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as u64;
        running.update(0.5, hits, chunk.len() as u64);
    }
    let metric_s = t.elapsed().as_secs_f64();
    std::hint::black_box(running.accuracy());

    Ok(Overheads {
        plain_batch_s,
        augmented_batch_s,
        metric_s,
        db_write_s: db_write_seconds(20)?,
    })
}

/// Mean seconds of `record_epoch` over `n` epochs of one trial, on a fresh database file
/// in the temporary directory (removed afterwards).
fn db_write_seconds(n: usize) -> Result<f64> {
    let dir = std::env::temp_dir().join(format!("cifar-bench-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let res = (|| -> Result<f64> {
        let db = sweep::store::Store::open(&dir.join("results.db"))?;
        let sweep_id = db.upsert_sweep(
            &sweep::store::NewSweep {
                name: "bench".into(),
                description: String::new(),
                spec: String::new(),
                spec_path: String::new(),
                host: sweep::store::hostname(),
                git_rev: None,
                device: "cpu".into(),
                data_checksum: String::new(),
            },
            &|| sweep::store::ConfigSet::new([json!({"arch": "bench"})]),
        )?;
        db.insert_trials(
            sweep_id,
            &[sweep::store::NewTrial {
                key: "bench".into(),
                ordinal: 0,
                config: json!({"arch": "bench"}),
            }],
        )?;
        let trial = db
            .claim_next(
                sweep_id,
                &sweep::store::Worker::current(),
                "cpu",
                std::time::Duration::from_secs(3600),
            )?
            .context("no trial to claim")?;
        let t = Instant::now();
        for epoch in 1..=n {
            db.record_epoch(
                trial.id,
                &trainer::metrics::EpochRecord {
                    epoch,
                    train_loss: 1.0,
                    train_acc: 0.5,
                    valid_loss: 1.0,
                    valid_acc: 0.5,
                    lr: 0.01,
                    seconds: 10.0,
                    images_per_sec: 1000.0,
                },
            )?;
        }
        Ok(t.elapsed().as_secs_f64() / n as f64)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Runs a child command and parses the last line of its stdout as JSON.
fn run_json(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    let line = line.with_context(|| format!("{cmd:?} printed no JSON:\n{stdout}"))?;
    Ok(serde_json::from_str(line)?)
}

fn threads_env(cmd: &mut Command, threads: usize) -> &mut Command {
    let t = threads.to_string();
    for k in ["RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
        cmd.env(k, &t);
    }
    cmd.env_remove("CIFAR_SWEEP_KERNELS")
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn fmt_rate(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => "-".into(),
    }
}

fn driver(a: &DriverArgs) -> Result<()> {
    let models = list(&a.models);
    let batches: Vec<usize> = list(&a.batches)
        .iter()
        .map(|b| b.parse().context("--batches"))
        .collect::<Result<_>>()?;
    let (threads, secs, repeat) = (a.threads, a.time, a.repeat);
    let on_cpu = a.device == "cpu";
    // The fast kernels are CPU kernels: on a GPU "fast" is the trainer there and "stock"
    // would measure the same thing again.
    let impls: Vec<String> = list(&a.impls)
        .into_iter()
        .filter(|i| on_cpu || i != "stock")
        .collect();
    let precisions = list(&a.precisions);
    for p in &precisions {
        Target::parse("cpu", p)?;
    }
    let (python, script) = (&a.python, &a.script);
    let exe = std::env::current_exe()?;
    let want = |i: &str| impls.iter().any(|x| x == i);

    let mut md = String::new();
    let date = Command::new("date")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // Best of three: a reading taken while the host steals a core comes out at half (seen:
    // 117 against 232 GFLOP/s), and every "% peak" of the table is relative to it.
    let peak = (0..3)
        .map(|_| peak::measure(threads, 1.0))
        .fold(0f64, f64::max);
    md += &format!(
        "Run: {date}; CPU: {} ({} logical CPUs), {threads} threads each side; \
         load average before: {}; measured FMA peak: {peak:.0} GFLOP/s; device: {}.\n\n",
        cpu_name(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_avg(),
        a.device,
    );
    if want("torch") {
        let v = Command::new(python)
            .args(["-c", "import torch; print(torch.__version__)"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        md += &format!(
            "PyTorch {v} ({python}).{}\n\n",
            if on_cpu {
                ""
            } else {
                " On the GPU neither side reads its loss back per step; each stops the clock \
                 after the device is idle. fp32: TF32 off on both sides; tf32: on for \
                 PyTorch's cuDNN convolutions and matrix products and for candle's matrix \
                 products; bf16: autocast on both sides."
            }
        );
    }
    eprint!("{md}");

    md += "GFLOP/s count a direct convolution's arithmetic; where the fast kernels use \
           Winograd (most of vgg6's 3x3 layers) they do fewer multiplications, so there the figure is \
           a throughput and can pass the peak.\n\n";
    md += "| model | batch | precision | train img/s: stock | fast | torch | fast/torch | train GFLOP/s: fast | torch | % peak (fast) | infer img/s: stock | fast | torch | fast/torch | infer GFLOP/s: fast | peak RSS MiB: stock / fast / torch |\n";
    md += "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
    let mut results = Vec::new();
    for m in &models {
        let f = flops::per_image(m).with_context(|| format!("unknown model {m}"))?;
        for (&b, prec) in batches
            .iter()
            .flat_map(|b| precisions.iter().map(move |p| (b, p)))
        {
            let mut row: BTreeMap<&str, Value> = BTreeMap::new();
            // Interleaved repeats; per implementation the best throughputs and the largest
            // peak RSS are kept.
            for _ in 0..repeat {
                for imp in ["stock", "fast", "torch"] {
                    if !want(imp) {
                        continue;
                    }
                    let mut cmd = if imp == "torch" {
                        let mut c = Command::new(python);
                        c.args([script.as_str(), "child", "--model", m]);
                        c.args(["--threads", &threads.to_string()]);
                        c
                    } else {
                        let mut c = Command::new(&exe);
                        c.args(["child", "--model", m, "--impl", imp]);
                        c
                    };
                    cmd.args(["--batch", &b.to_string(), "--time", &secs.to_string()]);
                    cmd.args(["--device", &a.device, "--precision", prec]);
                    let v = run_json(threads_env(&mut cmd, threads))?;
                    let merged = match row.remove(imp) {
                        None => v,
                        Some(old) => {
                            let best = |k: &str, max: bool| {
                                let (a, b) = (old[k].as_f64(), v[k].as_f64());
                                match (a, b) {
                                    (Some(a), Some(b)) => {
                                        json!(if max { a.max(b) } else { a.min(b) })
                                    }
                                    _ => old[k].clone(),
                                }
                            };
                            json!({
                                "train_img_s": best("train_img_s", true),
                                "infer_img_s": best("infer_img_s", true),
                                "train_cpu_s_per_img": best("train_cpu_s_per_img", false),
                                "infer_cpu_s_per_img": best("infer_cpu_s_per_img", false),
                                "peak_rss_kib": best("peak_rss_kib", true),
                                "started_unix_s": best("started_unix_s", false),
                                "ended_unix_s": best("ended_unix_s", true),
                            })
                        }
                    };
                    row.insert(imp, merged);
                }
            }
            let g = |imp: &str, k: &str| row.get(imp).and_then(|v| v[k].as_f64());
            let ratio = |k: &str| match (g("fast", k), g("torch", k)) {
                (Some(a), Some(b)) => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            let gf = |imp: &str| g(imp, "train_img_s").map(|r| r * f.train / 1e9);
            let rss = |imp: &str| {
                g(imp, "peak_rss_kib").map_or("-".into(), |k| format!("{:.0}", k / 1024.0))
            };
            let line = format!(
                "| {m} | {b} | {prec} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
                fmt_rate(g("stock", "train_img_s")),
                fmt_rate(g("fast", "train_img_s")),
                fmt_rate(g("torch", "train_img_s")),
                ratio("train_img_s"),
                fmt_rate(gf("fast")),
                fmt_rate(gf("torch")),
                // The peak is the CPU's: on a GPU the column means nothing.
                gf("fast")
                    .filter(|_| on_cpu)
                    .map_or("-".into(), |v| format!("{:.0}%", 100.0 * v / peak)),
                fmt_rate(g("stock", "infer_img_s")),
                fmt_rate(g("fast", "infer_img_s")),
                fmt_rate(g("torch", "infer_img_s")),
                ratio("infer_img_s"),
                fmt_rate(g("fast", "infer_img_s").map(|r| r * f.forward / 1e9)),
                rss("stock"),
                rss("fast"),
                rss("torch"),
            );
            eprint!("{line}");
            md += &line;
            results.push(json!({"model": m, "batch": b, "precision": prec, "results": row}));
        }
    }
    md += &format!("\nLoad average after: {}.\n", load_avg());

    if a.epoch {
        md += &epochs(a, &exe, &impls)?;
    }
    println!("{md}");
    if let Some(p) = &a.markdown {
        std::fs::write(p, &md)?;
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

/// One real-data epoch per model and implementation. Imports the data into the cache first
/// (untimed) if needed.
fn epochs(a: &DriverArgs, exe: &Path, impls: &[String]) -> Result<String> {
    let (threads, python, script, data_dir) = (a.threads, &a.python, &a.script, &a.data_dir);
    let mut src = trainer::data::DataSource::new(data_dir);
    src.url = String::new();
    src.archive = trainer::data::find_shared_archive();
    if !src.cache_dir().exists() {
        eprintln!(
            "importing CIFAR-10 into {} (untimed)...",
            src.cache_dir().display()
        );
        trainer::data::load(&src)?;
    }
    let on_cpu = a.device == "cpu";
    // The epoch runs in the first precision listed.
    let precision = list(&a.precisions)
        .into_iter()
        .next()
        .unwrap_or_else(|| "fp32".into());
    let mut md = format!(
        "\nReal-data epoch (CIFAR-10 JPEG copy, imported cache `cifar-10-batches-bin`; 40,000 \
         training images after the 20% validation split; {} on {}). Ours runs the training \
         loop itself (`Trainer::train_epoch`, as `cifar-sweep` does: batch assembly, progress, \
         statistics, then the 10,000-image validation); PyTorch's is a plain loop without \
         validation. Reading the cache, batching and training all timed; train img/s is the \
         training part alone:\n\n| model | batch | impl | epoch s | of which loading s | of which validation s | train img/s | peak RSS MiB |\n|---|---:|---|---:|---:|---:|---:|---:|\n",
        precision, a.device
    );
    let models = list(&a.epoch_models);
    let batch = a.epoch_batch;
    let epoch_impls: Vec<String> = match &a.epoch_impls {
        Some(v) => list(v),
        None => impls.to_vec(),
    }
    .into_iter()
    .filter(|i| on_cpu || i != "stock")
    .collect();
    let mut over = String::from(
        "\nTraining-loop overheads as a share of the fast epoch's training time (measured in \
         the same process after the epoch: batch assembly back to back; \
         augmented assembly (random crop + flip) and metric accumulation (the trainer's \
         accuracy ops and running totals) over the same batches; one `record_epoch` on a \
         real SQLite file, WAL, synchronous=FULL, mean of 20):\n\n| model | batch | train s | \
         batch assembly, back to back | with augmentation | metric accumulation | DB write per epoch |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in &models {
        for imp in &epoch_impls {
            let v = if imp == "torch" {
                let mut cmd = Command::new(python);
                cmd.args([
                    script.as_str(),
                    "epoch",
                    "--model",
                    m,
                    "--batch",
                    &batch.to_string(),
                ]);
                cmd.args(["--threads", &threads.to_string()]);
                cmd.arg("--cache").arg(src.cache_dir());
                cmd.args(["--device", &a.device, "--precision", &precision]);
                run_json(threads_env(&mut cmd, threads))?
            } else {
                let mut cmd = Command::new(exe);
                cmd.args(["epoch-child", "--model", m, "--impl", imp]);
                cmd.args(["--batch", &batch.to_string()]);
                cmd.arg("--data-dir").arg(data_dir);
                cmd.args(["--device", &a.device, "--precision", &precision]);
                run_json(threads_env(&mut cmd, threads))?
            };
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let line = format!(
                "| {m} | {batch} | {imp} | {:.2} | {:.2} | {} | {:.0} | {:.0} |\n",
                f("epoch_s"),
                f("load_s"),
                v["validation_s"]
                    .as_f64()
                    .map_or("-".into(), |s| format!("{s:.2}")),
                f("images") / f("train_s"),
                f("peak_rss_kib") / 1024.0
            );
            eprint!("{line}");
            md += &line;
            if imp == "fast" && on_cpu {
                let train = f("train_s");
                let share = |k: &str| format!("{:.3} s ({:.2}%)", f(k), 100.0 * f(k) / train);
                let db_ms = f("db_write_s") * 1e3;
                over += &format!(
                    "| {m} | {batch} | {train:.2} | {} | {} | {} | {db_ms:.2} ms ({:.3}%) |\n",
                    share("plain_batch_s"),
                    share("augmented_batch_s"),
                    share("metric_s"),
                    100.0 * f("db_write_s") / train,
                );
            }
        }
    }
    if on_cpu && epoch_impls.iter().any(|i| i == "fast") {
        eprint!("{over}");
        md += &over;
    }
    Ok(md)
}
