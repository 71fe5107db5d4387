//! Convolutions through cuDNN in all three passes (issue 15, item 3), as the project's own
//! custom ops: forward, input gradient and weight gradient. candle's `cudnn` feature covers
//! the forward pass only; its backward pass runs a naive conv-transpose kernel for the input
//! gradient and a convolution over transposed copies for the weight gradient.
//!
//! - The algorithm of each pass is cuDNN's first choice for the shape (its heuristics, no
//!   timed search), asked once per (shape, pass, math mode) and cached.
//! - Math mode: TF32 tensor cores only when the run's `precision` is `tf32` (candle's
//!   process-wide switch, which `Session::new` sets); fp32 otherwise (`CUDNN_FMA_MATH`).
//! - cuDNN handles are neither `Send` nor `Sync`: one per thread and device, as candle
//!   keeps its own.
//! - Contiguous f32 only, stride 1 (every model's convolutions); the bias is added by the
//!   caller. `CIFAR_SWEEP_CUDNN=0` falls back to candle's convolution (for A/B timing).
//!
//! Built with the `cudnn` feature; checked against candle's CPU convolution by the
//! `parity_*` tests when they run on a GPU.

use candle_core::{
    backend::BackendStorage, CpuStorage, CudaStorage, CustomOp2, DType, Layout, Result, Shape,
    Tensor,
};
use cudarc::cudnn::{sys, ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Whether convolutions on CUDA go through these ops (`CIFAR_SWEEP_CUDNN=0` turns them
/// off; read once).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CIFAR_SWEEP_CUDNN").map_or(true, |v| v.trim() != "0"))
}

/// One convolution's shape: input `[n, c, h, w]`, `o` filters of `k x k`, `pad` pixels of
/// zeros, stride 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    pad: usize,
}

impl Geometry {
    fn out_hw(&self) -> (usize, usize) {
        (
            self.h + 2 * self.pad + 1 - self.k,
            self.w + 2 * self.pad + 1 - self.k,
        )
    }
    fn x_dims(&self) -> [i32; 4] {
        [self.n, self.c, self.h, self.w].map(|v| v as i32)
    }
    fn w_dims(&self) -> [i32; 4] {
        [self.o, self.c, self.k, self.k].map(|v| v as i32)
    }
    fn y_dims(&self) -> [i32; 4] {
        let (oh, ow) = self.out_hw();
        [self.n, self.o, oh, ow].map(|v| v as i32)
    }
}

type Cache<A> = RefCell<HashMap<(Geometry, bool), A>>;

thread_local! {
    static HANDLES: RefCell<HashMap<candle_core::cuda::DeviceId, Arc<Cudnn>>> =
        RefCell::new(HashMap::new());
    /// The chosen algorithm of each pass per (shape, TF32).
    static FWD: Cache<sys::cudnnConvolutionFwdAlgo_t> = RefCell::new(HashMap::new());
    static DATA: Cache<sys::cudnnConvolutionBwdDataAlgo_t> = RefCell::new(HashMap::new());
    static FILTER: Cache<sys::cudnnConvolutionBwdFilterAlgo_t> = RefCell::new(HashMap::new());
}

fn handle(dev: &candle_core::CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(candle_core::Error::wrap)?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

fn w<E: std::error::Error + Send + Sync + 'static>(e: E) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The descriptors of one convolution (each holds the cuDNN handle).
struct Descs {
    conv: cudarc::cudnn::ConvDescriptor<f32>,
    x: cudarc::cudnn::TensorDescriptor<f32>,
    w: cudarc::cudnn::FilterDescriptor<f32>,
    y: cudarc::cudnn::TensorDescriptor<f32>,
    tf32: bool,
}

fn descs(dev: &candle_core::CudaDevice, g: &Geometry) -> Result<Descs> {
    let cudnn = handle(dev)?;
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let mut conv = cudnn
        .create_conv2d::<f32>(
            [g.pad as i32; 2],
            [1, 1],
            [1, 1],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )
        .map_err(w)?;
    let tf32 = candle_core::cuda::gemm_reduced_precision_f32();
    conv.set_math_type(if tf32 {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    })
    .map_err(w)?;
    Ok(Descs {
        x: cudnn.create_4d_tensor::<f32>(nchw, g.x_dims()).map_err(w)?,
        w: cudnn.create_4d_filter::<f32>(nchw, g.w_dims()).map_err(w)?,
        y: cudnn.create_4d_tensor::<f32>(nchw, g.y_dims()).map_err(w)?,
        conv,
        tf32,
    })
}

/// The algorithm `cache` holds for `(g, tf32)`, or `pick()`'s choice, remembered.
fn cached<A: Copy + 'static>(
    cache: &'static std::thread::LocalKey<Cache<A>>,
    g: &Geometry,
    tf32: bool,
    pick: impl FnOnce() -> Result<A>,
) -> Result<A> {
    let key = (*g, tf32);
    if let Some(a) = cache.with(|m| m.borrow().get(&key).copied()) {
        return Ok(a);
    }
    let a = pick()?;
    cache.with(|m| m.borrow_mut().insert(key, a));
    Ok(a)
}

fn contiguous_f32<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<cudarc::driver::CudaView<'a, f32>> {
    if !l.is_contiguous() {
        candle_core::bail!("cudnn conv: {what} is not contiguous");
    }
    let slice = s.as_cuda_slice::<f32>()?;
    let start = l.start_offset();
    Ok(slice.slice(start..start + l.shape().elem_count()))
}

/// Allocates the workspace and an `out_dims` f32 output, runs `launch` on them and wraps
/// the output: the common tail of the three passes.
fn finish(
    dev: &candle_core::CudaDevice,
    workspace: usize,
    out_dims: [i32; 4],
    launch: impl FnOnce(
        &mut cudarc::driver::CudaSlice<u8>,
        &mut cudarc::driver::CudaSlice<f32>,
    ) -> std::result::Result<(), cudarc::cudnn::CudnnError>,
) -> Result<(CudaStorage, Shape)> {
    let mut ws = dev.alloc_zeros::<u8>(workspace.max(1))?;
    let shape: Shape = out_dims.map(|v| v as usize).to_vec().into();
    // SAFETY: cuDNN writes every element of the output (beta = 0).
    let mut out = unsafe { dev.alloc::<f32>(shape.elem_count())? };
    launch(&mut ws, &mut out).map_err(w)?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
}

fn no_cpu(name: &str) -> Result<(CpuStorage, Shape)> {
    candle_core::bail!("{name} runs on CUDA only")
}

/// `y = conv(x, w)`.
struct ConvFwd(Geometry);
/// `dx = conv_backward_data(dy, w)`.
struct ConvBwdData(Geometry);
/// `dw = conv_backward_filter(x, dy)`.
struct ConvBwdFilter(Geometry);

impl CustomOp2 for ConvFwd {
    fn name(&self) -> &'static str {
        "cudnn-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = &self.0;
        let dev = xs.device();
        let (x, wt) = (contiguous_f32(xs, xl, "x")?, contiguous_f32(ws, wl, "w")?);
        let d = descs(dev, g)?;
        let op = ConvForward {
            conv: &d.conv,
            x: &d.x,
            w: &d.w,
            y: &d.y,
        };
        let a = cached(&FWD, g, d.tf32, || op.pick_algorithm().map_err(w))?;
        let size = op.get_workspace_size(a).map_err(w)?;
        // SAFETY: the buffers match the descriptors' shapes and type (checked contiguous f32).
        finish(dev, size, g.y_dims(), |ws, y| unsafe {
            op.launch(a, Some(ws), (1.0, 0.0), &x, &wt, y)
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(wt, &ConvBwdData(self.0))?)
        } else {
            None
        };
        let dw = if wt.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &ConvBwdFilter(self.0))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

impl CustomOp2 for ConvBwdData {
    fn name(&self) -> &'static str {
        "cudnn-conv2d-backward-data"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }

    fn cuda_fwd(
        &self,
        dys: &CudaStorage,
        dyl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = &self.0;
        let dev = dys.device();
        let (dy, wt) = (
            contiguous_f32(dys, dyl, "dy")?,
            contiguous_f32(ws, wl, "w")?,
        );
        let d = descs(dev, g)?;
        let op = ConvBackwardData {
            conv: &d.conv,
            dx: &d.x,
            w: &d.w,
            dy: &d.y,
        };
        let a = cached(&DATA, g, d.tf32, || op.pick_algorithm().map_err(w))?;
        let size = op.get_workspace_size(a).map_err(w)?;
        // SAFETY: the buffers match the descriptors.
        finish(dev, size, g.x_dims(), |ws, dx| unsafe {
            op.launch(a, Some(ws), (1.0, 0.0), dx, &wt, &dy)
        })
    }
}

impl CustomOp2 for ConvBwdFilter {
    fn name(&self) -> &'static str {
        "cudnn-conv2d-backward-filter"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        dys: &CudaStorage,
        dyl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = &self.0;
        let dev = xs.device();
        let (x, dy) = (
            contiguous_f32(xs, xl, "x")?,
            contiguous_f32(dys, dyl, "dy")?,
        );
        let d = descs(dev, g)?;
        let op = ConvBackwardFilter {
            conv: &d.conv,
            x: &d.x,
            dw: &d.w,
            dy: &d.y,
        };
        let a = cached(&FILTER, g, d.tf32, || op.pick_algorithm().map_err(w))?;
        let size = op.get_workspace_size(a).map_err(w)?;
        // SAFETY: the buffers match the descriptors.
        finish(dev, size, g.w_dims(), |ws, dw| unsafe {
            op.launch(a, Some(ws), (1.0, 0.0), &x, dw, &dy)
        })
    }
}

/// Whether [`conv2d`] takes these arguments: f32 on CUDA, square kernels, stride 1.
pub fn applies(x: &Tensor, wt: &Tensor, stride: usize) -> bool {
    enabled()
        && stride == 1
        && x.device().is_cuda()
        && x.dtype() == DType::F32
        && wt.dtype() == DType::F32
        && x.rank() == 4
        && wt.rank() == 4
        && wt.dim(2).ok() == wt.dim(3).ok()
}

/// `conv2d(x, w) + b` with every pass through cuDNN (see [`applies`]).
pub fn conv2d(x: &Tensor, wt: &Tensor, b: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, c2, k, _) = wt.dims4()?;
    if c != c2 {
        candle_core::bail!("cudnn conv: {c} input channels against filters of {c2}");
    }
    let g = Geometry {
        n,
        c,
        h,
        w: wd,
        o,
        k,
        pad: padding,
    };
    let y = x.contiguous()?.apply_op2(&wt.contiguous()?, ConvFwd(g))?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}
