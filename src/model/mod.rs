//! Models: hyperparameters per architecture ([`Config`]) and the weight tensors of each layer
//! ([`ModelTensors`], [`LayerWeights`]).

mod config;
mod weights;

pub use config::{Activation, Arch, Config, RopeStyle};
pub use weights::{LayerTensors, LayerWeights, ModelTensors, WeightView};
