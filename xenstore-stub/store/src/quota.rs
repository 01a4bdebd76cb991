//! Per-domain limits. They apply to unprivileged connections only (the toolstack is
//! trusted), except [`Quotas::max_output_bytes`], which every transport applies to every
//! connection. The defaults are those of Xen's C xenstored where it has one.
//!
//! | limit                          | default  | when exceeded                           |
//! |--------------------------------|----------|-----------------------------------------|
//! | nodes owned by a domain        | 1000     | `ENOSPC` on the create                  |
//! | watches of a domain            | 128      | `E2BIG` on the `WATCH`                  |
//! | open transactions of a domain  | 10       | `ENOSPC` on `TRANSACTION_START`         |
//! | bytes of a node's value        | 2048     | `ENOSPC` on the `WRITE`                 |
//! | entries of a permission list   | 5        | `ENOSPC` on `SET_PERMS`                 |
//! | nodes one transaction touches  | 1024     | `ENOSPC` on the operation               |
//! | components of a path           | 64       | `EINVAL` (the path is not valid)        |
//! | queued output of a connection  | 64 KiB   | the transport disconnects the client    |
//!
//! Xen's xenstored measures the value limit over its whole node record; here it is the
//! value alone. Xen has no depth limit (its path length limit bounds depth to about 1500);
//! ours keeps the per-operation work of a hostile domain small.

/// The limits of one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own.
    pub max_nodes_per_domain: usize,
    /// Watches a domain may have registered.
    pub max_watches_per_domain: usize,
    /// Transactions a domain may have open.
    pub max_transactions_per_domain: usize,
    /// Bytes of one node's value.
    pub max_value_bytes: usize,
    /// Entries in one node's permission list (owner included).
    pub max_perms_per_node: usize,
    /// Distinct nodes one transaction may read or write.
    pub max_transaction_nodes: usize,
    /// Components of a path an unprivileged connection may use.
    pub max_path_depth: usize,
    /// Bytes of replies and watch events queued for one connection before the transport
    /// disconnects it; see [`crate::OutputQueue`].
    pub max_output_bytes: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_nodes_per_domain: 1000,
            max_watches_per_domain: 128,
            max_transactions_per_domain: 10,
            max_value_bytes: 2048,
            max_perms_per_node: 5,
            max_transaction_nodes: 1024,
            max_path_depth: 64,
            max_output_bytes: 64 * 1024,
        }
    }
}
