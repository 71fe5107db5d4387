//! Nominal floating-point work per image of each model, counted from its convolution and
//! linear layers (2 FLOPs per multiply-add; bias, activation, pooling and batch norm are
//! ignored). Training = forward + weight gradient + input gradient, without the first layer's
//! input gradient (the image needs none; neither implementation computes it).

/// FLOPs per image.
pub struct Flops {
    pub forward: f64,
    pub train: f64,
}

enum Layer {
    /// c_in, c_out, kernel, output side.
    Conv(usize, usize, usize, usize),
    /// in, out.
    Linear(usize, usize),
}

fn layers(model: &str) -> Option<Vec<Layer>> {
    use Layer::*;
    Some(match model {
        "lenet" => vec![
            Conv(3, 6, 5, 28),
            Conv(6, 16, 5, 10),
            Linear(400, 120),
            Linear(120, 84),
            Linear(84, 10),
        ],
        "cnn3" => vec![
            Conv(3, 16, 3, 32),
            Conv(16, 32, 3, 16),
            Conv(32, 64, 3, 8),
            Linear(1024, 512),
            Linear(512, 64),
            Linear(64, 10),
        ],
        "vgg6" => vec![
            Conv(3, 32, 3, 32),
            Conv(32, 64, 3, 32),
            Conv(64, 128, 3, 16),
            Conv(128, 128, 3, 16),
            Conv(128, 256, 3, 8),
            Conv(256, 256, 3, 8),
            Linear(4096, 1024),
            Linear(1024, 512),
            Linear(512, 10),
        ],
        _ => return None,
    })
}

pub fn per_image(model: &str) -> Option<Flops> {
    let macs: Vec<f64> = layers(model)?
        .iter()
        .map(|l| match *l {
            Layer::Conv(ci, co, k, s) => (ci * co * k * k * s * s) as f64,
            Layer::Linear(i, o) => (i * o) as f64,
        })
        .collect();
    let forward = 2.0 * macs.iter().sum::<f64>();
    Some(Flops {
        forward,
        train: 3.0 * forward - 2.0 * macs[0],
    })
}
