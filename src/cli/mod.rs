//! One module per subcommand: its arguments and the code that prints its output.

pub mod check_reference;
pub mod info;
pub mod inspect;
pub mod quantize;
pub mod tokenize;
