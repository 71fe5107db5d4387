//! The tutorial's three CNNs, and the registry that names them.
//!
//! Adding an architecture is one file (a `pub const ARCH: Arch` and its builder) and one line
//! in [`ARCHS`].

mod airnet;
mod cnn3;
mod layers;
mod lenet;
mod vgg6;
pub mod whiten;

pub use layers::{activate, batch_norm_act, conv2d, linear, Conv2d, Dropout, DropoutRng, Linear};

use crate::{Error, Result, TrainConfig};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

/// A network that maps `[B, 3, 32, 32]` images to `[B, 10]` logits.
pub trait Model: Send {
    /// The logits of `x`; `train` turns dropout on and batch norm to batch statistics.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
    /// Reseeds the dropout masks; the training loop calls this before every batch with a
    /// seed derived from (run seed, epoch, batch), so a run resumed mid-epoch draws the
    /// same masks.
    fn reseed(&self, seed: u64);
    /// Sets the weights that depend on the training data (airnet's whitening filters) from
    /// `images` (`[N, 3, 32, 32]`, normalised, not augmented: the first images of the
    /// training split). The trainer calls it once, after the seeded initialisation and
    /// before training, on a fresh start only (a resumed run gets these weights from its
    /// checkpoint, where they are saved like every variable). Does nothing by default.
    fn init_from_data(&self, _images: &Tensor) -> candle_core::Result<()> {
        Ok(())
    }
    /// Whether [`Model::init_from_data`] uses its images (the trainer builds them only
    /// then). False by default.
    fn wants_data(&self) -> bool {
        false
    }
    /// The variables (by name) the optimiser never changes: the model uses them detached,
    /// so they get no gradient. They are not counted in [`Arch::params`].
    fn frozen(&self) -> &'static [&'static str] {
        &[]
    }
    /// Variables trained for the first `n` epochs only, as `(name, n)`: from epoch `n + 1`
    /// on the optimiser leaves them as they are (airbench's whitening bias, 3 epochs).
    fn frozen_after(&self) -> &'static [(&'static str, usize)] {
        &[]
    }
}

/// One registered architecture.
pub struct Arch {
    /// The name a sweep file uses (`arch = "..."`).
    pub name: &'static str,
    /// One line for listings.
    pub description: &'static str,
    /// Trainable parameters (weights and biases, not batch-norm running statistics).
    pub params: usize,
    /// Creates the layers' variables through the builder and returns the network.
    pub build: fn(VarBuilder, &TrainConfig) -> candle_core::Result<Box<dyn Model>>,
}

/// Every architecture, by the name a sweep file uses.
pub const ARCHS: &[Arch] = &[lenet::ARCH, cnn3::ARCH, vgg6::ARCH, airnet::ARCH];

/// The registered names, in registry order (for messages and listings).
pub fn arch_names() -> Vec<&'static str> {
    ARCHS.iter().map(|a| a.name).collect()
}

/// The architecture called `name`, or [`Error::UnknownArch`] naming the known ones.
pub fn find(name: &str) -> Result<&'static Arch> {
    ARCHS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| Error::UnknownArch {
            name: name.to_string(),
            known: arch_names().join(", "),
        })
}

/// Checks a whole configuration: `cfg.arch` against [`ARCHS`], then every other field
/// ([`TrainConfig::validate`]). Returns `(field, message)` like `validate`, so a sweep file
/// can point at the key; the architecture comes first, so a misspelt one is the error
/// reported rather than a field that depends on it.
pub fn validate(cfg: &TrainConfig) -> std::result::Result<(), (&'static str, String)> {
    find(&cfg.arch).map_err(|e| ("arch", e.to_string()))?;
    cfg.validate()
}

/// Builds `cfg.arch`, creating its variables through `vb`. The variables get candle's
/// (unseeded) initial values: use [`instantiate`] for a reproducible model.
pub fn build(arch: &str, cfg: &TrainConfig, vb: VarBuilder) -> Result<Box<dyn Model>> {
    Ok((find(arch)?.build)(vb, cfg)?)
}

/// Builds `cfg.arch` on `device` with weights drawn from `cfg.seed`: the same seed gives the
/// same initial weights, whatever order the variables were created in.
pub fn instantiate(cfg: &TrainConfig, device: &Device) -> Result<(VarMap, Box<dyn Model>)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = build(&cfg.arch, cfg, vb)?;
    layers::init_seeded(&varmap, cfg.seed)?;
    Ok((varmap, model))
}

/// The variables in a stable order (sorted by name), for optimisers and checkpoints.
pub fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("varmap poisoned");
    let mut vars: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trainable_params(arch: &str) -> (usize, Tensor) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = TrainConfig {
            arch: arch.into(),
            dropout: 0.5,
            ..Default::default()
        };
        let model = build(arch, &cfg, vb).unwrap();
        let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let y = model.forward_t(&x, true).unwrap();
        let data = varmap.data().lock().unwrap();
        let frozen = model.frozen();
        let n = data
            .iter()
            .filter(|(k, _)| !k.contains("running_") && !frozen.contains(&k.as_str()))
            .map(|(_, v)| v.elem_count())
            .sum();
        (n, y)
    }

    #[test]
    fn parameter_counts_match_the_documented_ones() {
        // Hand-computed: lenet 456 + 2,416 + 48,120 + 10,164 + 850;
        // cnn3 448 + 4,640 + 18,496 + 524,800 + 32,832 + 650;
        // vgg6 convs 896+18,496+73,856+147,584+295,168+590,080, bn 64+256+512,
        //      linear 4,195,328 + 524,800 + 5,130;
        // airnet (convs without bias, batch norms with a bias only, the whitening weights
        //      frozen): whitening bias 24; block1 24*64*9 + 64 + 64*64*9 + 64;
        //      block2 64*256*9 + 256 + 256*256*9 + 256; block3 2 * (256*256*9 + 256);
        //      linear 256*10.
        let airnet = 24
            + (24 * 64 * 9 + 64 + 64 * 64 * 9 + 64)
            + (64 * 256 * 9 + 256 + 256 * 256 * 9 + 256)
            + 2 * (256 * 256 * 9 + 256)
            + 256 * 10;
        assert_eq!(airnet, 1_971_352);
        let expected = [
            ("lenet", 62_006),
            ("cnn3", 581_866),
            ("vgg6", 5_852_170),
            ("airnet", airnet),
        ];
        for (arch, n) in expected {
            let (got, y) = trainable_params(arch);
            assert_eq!(got, n, "{arch}");
            assert_eq!(find(arch).unwrap().params, n, "{arch} registry");
            assert_eq!(y.dims(), &[2, 10], "{arch} output shape");
        }
    }

    #[test]
    fn unknown_architecture_names_the_known_ones() {
        let err = find("resnet").err().unwrap().to_string();
        assert_eq!(
            err,
            "unknown architecture `resnet` (known: lenet, cnn3, vgg6, airnet)"
        );
    }

    #[test]
    fn validate_names_the_arch_field_before_the_others() {
        let cfg = TrainConfig {
            arch: "resnet".into(),
            epochs: 0,
            ..Default::default()
        };
        assert_eq!(
            validate(&cfg),
            Err((
                "arch",
                "unknown architecture `resnet` (known: lenet, cnn3, vgg6, airnet)".into()
            ))
        );
        let cfg = TrainConfig {
            arch: "cnn3".into(),
            ..cfg
        };
        assert_eq!(validate(&cfg).unwrap_err().0, "epochs");
        assert_eq!(validate(&TrainConfig::default()), Ok(()));
    }

    #[test]
    fn eval_mode_is_deterministic_and_dropout_is_off() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = TrainConfig {
            arch: "cnn3".into(),
            dropout: 0.5,
            ..Default::default()
        };
        let model = build("cnn3", &cfg, vb).unwrap();
        let x = Tensor::randn(0f32, 1., (3, 3, 32, 32), &Device::Cpu).unwrap();
        let a = model
            .forward_t(&x, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let b = model
            .forward_t(&x, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
        model.reseed(1);
        let t1 = model.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap();
        model.reseed(1);
        let t2 = model.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(t1, t2, "same seed, same dropout masks");
        assert_ne!(t1, a, "dropout is active in training mode");
    }

    #[test]
    fn same_seed_same_initial_weights() {
        let cfg = TrainConfig {
            arch: "vgg6".into(),
            seed: 7,
            ..Default::default()
        };
        let flat = |cfg: &TrainConfig| -> Vec<(String, Vec<f32>)> {
            let (vm, _) = instantiate(cfg, &Device::Cpu).unwrap();
            sorted_vars(&vm)
                .into_iter()
                .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
                .collect()
        };
        let a = flat(&cfg);
        assert_eq!(a, flat(&cfg));
        let b = flat(&TrainConfig { seed: 8, ..cfg });
        assert_ne!(a, b);
        // PyTorch-style bounds: every conv1 weight of block1 within 1/sqrt(27).
        let (_, w) = a.iter().find(|(k, _)| k == "block1.conv1.weight").unwrap();
        let bound = 1.0 / 27f32.sqrt();
        assert!(w.iter().all(|v| v.abs() <= bound));
        assert!(w.iter().any(|v| v.abs() > bound * 0.9));
        let (_, g) = a.iter().find(|(k, _)| k == "block1.bn.weight").unwrap();
        assert!(g.iter().all(|&v| v == 1.0), "batch-norm scale starts at 1");
    }
}
