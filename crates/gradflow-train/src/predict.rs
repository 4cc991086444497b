//! Classifying images with a trained MNIST model: the same normalization as
//! training, and dark-on-light drawings inverted to MNIST's white on black.

use crate::error::{Error, Result};
use gradflow::{no_grad, Tensor};
use gradflow_data::{MNIST_MEAN, MNIST_STD};
use gradflow_nn::{Ctx, ModelSpec, Module, Sequential};
use std::path::Path;

/// One image's classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Every class with its probability, most probable first.
    pub ranked: Vec<(usize, f64)>,
    /// Whether the image was inverted because its background was light.
    pub inverted: bool,
}

impl Prediction {
    /// The most probable class.
    pub fn class(&self) -> usize {
        self.ranked[0].0
    }
}

/// Refuse models whose input is not one 28×28 grayscale image.
pub fn check_image_model(spec: &ModelSpec) -> Result<()> {
    if spec.input.iter().product::<usize>() != 784 {
        return Err(Error::Input(format!(
            "predict reads 28×28 grayscale images, but the model's input is {:?}",
            spec.input
        )));
    }
    Ok(())
}

/// Classify a PNG or PGM image of any size (resized to 28×28).
pub fn classify_image(spec: &ModelSpec, model: &Sequential, path: &Path) -> Result<Prediction> {
    check_image_model(spec)?;
    let _g = no_grad();
    let mut px = gradflow_data::load_gray_image(path)?;
    let inverted = gradflow_data::invert_if_light_background(&mut px, 28, 28);
    let x: Vec<f32> = px.iter().map(|v| (v - MNIST_MEAN) / MNIST_STD).collect();
    let mut shape = vec![1];
    shape.extend_from_slice(&spec.input);
    let logits = model.forward(&Tensor::from_vec(x, &shape)?, &mut Ctx::eval())?;
    let probs = logits.softmax(1)?.to_vec_f64();
    let mut ranked: Vec<(usize, f64)> = probs.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Prediction { ranked, inverted })
}
