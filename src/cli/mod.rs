//! One module per subcommand: its arguments and the code that prints its output.

pub mod bench;
pub mod calibrate;
pub mod check_reference;
pub mod info;
pub mod inspect;
pub mod logits;
pub mod perplexity;
pub mod plan;
pub mod profile;
pub mod quantize;
pub mod run;
pub mod tokenize;
