//! What happened to the stacks of one run: the data type lives in `protocol` (the daemon
//! returns it in its `annotate` answer).

pub use protocol::AnnotateSummary as Summary;
