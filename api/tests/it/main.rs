//! Every integration test of the `api` crate, in one binary: each module
//! drives real `secretd` processes (and real etcdctl, curl, Patroni and
//! PostgreSQL where a module says so) the way an operator or a client would. One
//! binary links the whole stack once instead of once per file; tests run
//! in parallel threads, so none may change the process's own state
//! (environment, umask, limits): `common::Cluster` passes such settings to
//! the members it starts instead.

mod common;

mod agent;
mod answers;
mod auth_races;
mod auth_tokens;
mod bad_input;
mod bad_peers;
mod canary;
mod cluster_ops;
mod corruption;
mod disaster;
mod docker;
mod docker_table;
mod embed;
mod etcd_fidelity;
mod etcd_format;
mod etcdctl;
mod faults;
mod floods;
mod hostile;
mod jepsen_smoke;
mod keys;
mod layering;
mod leases;
mod locks;
mod membership;
mod secrets_cli;
mod snapshots;
mod swarm;
mod tls;
mod txn_diff;
mod upgrade;
mod watch_guarantees;
mod watch_progress;
