//! Every name a user can choose, in one serializable value: what the
//! playground serves (`/api/limits`) and what help texts list. Each list is
//! read from the declarations themselves, so a new activation, optimizer,
//! loss, initializer or schedule appears here without an edit.

use crate::init::{Init, InitInfo};
use crate::layers::activation::{Activation, ActivationInfo};
use crate::loss::{Loss, LossInfo};
use crate::optim::{OptimizerInfo, OptimizerSpec};
use crate::schedule::{ScheduleInfo, ScheduleSpec};
use serde::Serialize;

/// All the declarations, as lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Registry {
    /// Every activation with its arguments, defaults and saturation.
    pub activations: Vec<ActivationInfo>,
    /// Every optimizer with its hyperparameters' defaults.
    pub optimizers: Vec<OptimizerInfo>,
    /// Every loss.
    pub losses: Vec<LossInfo>,
    /// Every initializer.
    pub inits: Vec<InitInfo>,
    /// Every learning-rate schedule the command line names.
    pub schedules: Vec<ScheduleInfo>,
}

/// Every declaration, as lists.
pub fn registry() -> Registry {
    Registry {
        activations: Activation::registry(),
        optimizers: OptimizerSpec::registry(),
        losses: Loss::registry().to_vec(),
        inits: Init::registry().to_vec(),
        schedules: ScheduleSpec::registry().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_every_list_with_names() {
        let json = serde_json::to_value(registry()).unwrap();
        assert_eq!(json["activations"][0]["name"], "ReLU");
        assert_eq!(json["activations"][1]["args"][0]["name"], "negative_slope");
        assert_eq!(
            json["optimizers"][1]["defaults"]["betas"],
            serde_json::json!([0.9, 0.999])
        );
        assert_eq!(json["losses"][0]["torch_name"], "CrossEntropyLoss");
        assert_eq!(json["inits"][3]["name"], "he");
        assert_eq!(json["schedules"][3]["name"], "cosine");
    }
}
