//! Weight initializers.
//!
//! The right initializer depends on the activation that follows: a layer's
//! output variance is fan_in · Var(w) · Var(x), and the activation then scales
//! it by its own gain. Xavier/Glorot (Glorot & Bengio 2010) keeps variance
//! steady for symmetric, roughly linear activations such as tanh and sigmoid
//! near 0; He/Kaiming (He et al. 2015) doubles it to make up for ReLU zeroing
//! half its inputs. With the wrong one, a deep net's signals and gradients
//! shrink or grow geometrically with depth.
//!
//! Linear and Conv2d default to PyTorch's own default (Kaiming-uniform with
//! a = √5, i.e. U(±1/√fan_in), and the same bound for the bias), so a model
//! built here starts from the same distribution as its PyTorch twin.

use gradflow::{DType, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How to draw a layer's initial weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// PyTorch's default for Linear and Conv2d: U(±1/√fan_in).
    #[default]
    PytorchDefault,
    /// U(±gain·√(6/(fan_in+fan_out))).
    XavierUniform,
    /// N(0, gain²·2/(fan_in+fan_out)).
    XavierNormal,
    /// U(±gain·√(3/fan)), gain √2 for ReLU.
    KaimingUniform {
        /// Use fan_out instead of fan_in (preserves the backward pass's variance instead of the forward's).
        fan_out: bool,
    },
    /// N(0, gain²/fan).
    KaimingNormal {
        /// Use fan_out instead of fan_in.
        fan_out: bool,
    },
    /// N(0, 1/fan_in), the SELU companion.
    LecunNormal,
    /// All zeros.
    Zeros,
    /// Every weight equal to the value.
    Constant(f64),
}

/// One initializer as a name chooses it: in model files (`init = "he"`), on
/// the command line (`--init he`) and in the playground's menu.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InitInfo {
    /// The name written in files and flags.
    pub name: &'static str,
    /// Other names accepted for it.
    #[serde(skip)]
    pub aliases: &'static [&'static str],
    /// The initializer.
    #[serde(skip)]
    pub init: Init,
    /// One line on what it draws.
    pub description: &'static str,
}

/// Every initializer a name can choose, declared once.
const DECLARED: &[InitInfo] = &[
    InitInfo {
        name: "pytorch",
        aliases: &["default"],
        init: Init::PytorchDefault,
        description: "PyTorch's default for Linear and Conv2d: U(±1/√fan_in), the bias too",
    },
    InitInfo {
        name: "xavier_uniform",
        aliases: &["xavier", "glorot", "glorot_uniform"],
        init: Init::XavierUniform,
        description: "Glorot & Bengio: U(±√(6/(fan_in+fan_out))), for tanh and sigmoid",
    },
    InitInfo {
        name: "xavier_normal",
        aliases: &["glorot_normal"],
        init: Init::XavierNormal,
        description: "Glorot & Bengio: N(0, 2/(fan_in+fan_out))",
    },
    InitInfo {
        name: "he",
        aliases: &["kaiming", "he_uniform", "kaiming_uniform"],
        init: Init::KaimingUniform { fan_out: false },
        description: "He et al.: U(±gain·√(3/fan_in)), for ReLU and its kin",
    },
    InitInfo {
        name: "he_normal",
        aliases: &["kaiming_normal"],
        init: Init::KaimingNormal { fan_out: false },
        description: "He et al.: N(0, gain²/fan_in)",
    },
    InitInfo {
        name: "lecun_normal",
        aliases: &["lecun"],
        init: Init::LecunNormal,
        description: "LeCun: N(0, 1/fan_in), the SELU companion",
    },
    InitInfo {
        name: "zeros",
        aliases: &[],
        init: Init::Zeros,
        description: "All zeros (every unit learns the same thing: for experiments only)",
    },
];

impl Init {
    /// Every initializer a name can choose, for lists (the CLI's help, the playground's menu).
    pub fn registry() -> &'static [InitInfo] {
        DECLARED
    }

    /// Parse a name from [`registry`](Self::registry) or one of its aliases (case-insensitive, `-` as `_`).
    pub fn parse(name: &str) -> crate::Result<Init> {
        let name = name.to_ascii_lowercase().replace('-', "_");
        DECLARED
            .iter()
            .find(|d| d.name == name || d.aliases.contains(&name.as_str()))
            .map(|d| d.init)
            .ok_or_else(|| crate::Error::UnknownName {
                what: "initializer",
                name,
                expected: crate::error::one_of(&DECLARED.iter().map(|d| d.name).collect::<Vec<_>>()),
            })
    }

    /// The name a file or flag uses for this kind of initializer (a constant is written as `zeros`).
    pub fn name(&self) -> &'static str {
        let kind = std::mem::discriminant(match self {
            Init::Constant(_) => &Init::Zeros,
            other => other,
        });
        DECLARED
            .iter()
            .find(|d| std::mem::discriminant(&d.init) == kind)
            .map_or("zeros", |d| d.name)
    }
}

/// (fan_in, fan_out) of a weight in PyTorch's layout: `[out, in]` or `[out, in, kh, kw]`.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        _ => {
            let receptive: usize = shape[2..].iter().product();
            (shape[1] * receptive, shape[0] * receptive)
        }
    }
}

/// The gain an initializer should use before an activation with gain `activation_gain`.
/// Xavier/Glorot is used as published (gain 1: it assumes a roughly linear, symmetric
/// activation, and with ReLU it lets the signal halve at every layer); He/Kaiming and the
/// others take the activation's gain, which is what their derivation accounts for.
pub fn gain_for(init: Init, activation_gain: f64) -> f64 {
    match init {
        Init::XavierUniform | Init::XavierNormal => 1.0,
        _ => activation_gain,
    }
}

/// Draw a weight of `shape` with `init`; `gain` is the following activation's gain.
pub fn init_weight(shape: &[usize], init: Init, gain: f64, dtype: DType, rng: &mut impl Rng) -> Tensor {
    let (fan_in, fan_out) = fans(shape);
    let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
    match init {
        Init::PytorchDefault => {
            let b = 1.0 / fi.sqrt();
            Tensor::rand_uniform(shape, -b, b, dtype, rng)
        }
        Init::XavierUniform => {
            let b = gain * (6.0 / (fi + fo)).sqrt();
            Tensor::rand_uniform(shape, -b, b, dtype, rng)
        }
        Init::XavierNormal => Tensor::rand_normal(shape, 0.0, gain * (2.0 / (fi + fo)).sqrt(), dtype, rng),
        Init::KaimingUniform { fan_out } => {
            let f = if fan_out { fo } else { fi };
            let b = gain * (3.0 / f).sqrt();
            Tensor::rand_uniform(shape, -b, b, dtype, rng)
        }
        Init::KaimingNormal { fan_out } => {
            let f = if fan_out { fo } else { fi };
            Tensor::rand_normal(shape, 0.0, gain / f.sqrt(), dtype, rng)
        }
        Init::LecunNormal => Tensor::rand_normal(shape, 0.0, (1.0 / fi).sqrt(), dtype, rng),
        Init::Zeros => Tensor::zeros(shape, dtype),
        Init::Constant(v) => Tensor::full(shape, v, dtype),
    }
}

/// PyTorch's default bias: U(±1/√fan_in) of the weight it belongs to.
pub fn init_bias(len: usize, weight_shape: &[usize], dtype: DType, rng: &mut impl Rng) -> Tensor {
    let (fan_in, _) = fans(weight_shape);
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    Tensor::rand_uniform(&[len], -b, b, dtype, rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_of(t: &Tensor) -> f64 {
        let v = t.to_vec_f64();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    #[test]
    fn variances_match_their_formulas() {
        let mut rng = gradflow::seeded_rng(0);
        let shape = [400, 300];
        let he = init_weight(
            &shape,
            Init::KaimingNormal { fan_out: false },
            2f64.sqrt(),
            DType::F64,
            &mut rng,
        );
        assert!((std_of(&he) - (2.0f64 / 300.0).sqrt()).abs() < 0.002);
        let xu = init_weight(&shape, Init::XavierUniform, 1.0, DType::F64, &mut rng);
        // U(±b) has std b/√3.
        let b = (6.0f64 / 700.0).sqrt();
        assert!((std_of(&xu) - b / 3f64.sqrt()).abs() < 0.002);
        let v = xu.to_vec_f64();
        assert!(v.iter().all(|x| x.abs() <= b));
    }

    #[test]
    fn conv_fans_count_the_receptive_field() {
        assert_eq!(fans(&[16, 6, 5, 5]), (150, 400));
        assert_eq!(fans(&[10, 784]), (784, 10));
    }

    #[test]
    fn parse_names() {
        assert_eq!(Init::parse("He").unwrap(), Init::KaimingUniform { fan_out: false });
        assert!(Init::parse("bogus")
            .unwrap_err()
            .to_string()
            .contains("unknown initializer 'bogus'"));
    }
}
