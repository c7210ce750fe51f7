//! sparsevar-core: the language of the field.
//!
//! Tasks (distributions over Boolean inputs and labels), attention variants, the computation
//! graph with reverse-mode autodiff, models, optimizers and the [`backend::Backend`] trait.
//! The one design decision that shapes everything here: every tensor carries a leading
//! ensemble axis R, so R independent models train in one graph, one kernel launch serving
//! all of them. Core knows no backend, no script and no plot.

pub mod attention;
pub mod backend;
pub mod fault;
pub mod graph;
pub mod model;
pub mod norms;
pub mod optim;
pub mod registry;
pub mod rng;
pub mod task;
