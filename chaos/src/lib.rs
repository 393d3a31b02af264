//! flocker-chaos: a Jepsen-style suite that runs real `flocker node`
//! processes in network namespaces, injects faults, records a history and
//! checks it. See chaos/README.md.

pub mod history;
