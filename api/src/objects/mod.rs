//! secretstore.v1 over gRPC: the services over `secretd_secrets` (the
//! objects and the keyring live there), and the gRPC way members fetch
//! KEK generations. Its errors become statuses in `errors::secrets_status`.
//!
//! - `service`: Secrets, Configs, Tasks and Admin.
//! - `agent`: the node agent's stream and fetch, bound to its certificate.
//! - `driver`: a secret's plaintext for an orchestrator's task (Docker
//!   Swarm's secret provider plugin), for a driver's certificate.
//! - `kek_peers`: `Raft.FetchKek` as the keyring's [`KekPeers`].
//!
//! [`KekPeers`]: secretd_secrets::keys::KekPeers

pub mod agent;
pub mod driver;
pub mod kek_peers;
pub mod service;
