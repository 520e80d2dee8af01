//! The etcd v3 API: its gRPC services and its JSON gateway, each over the
//! store and each checking etcd's users and roles (`auth::Who`) as etcd
//! does. Everything an etcd client can call lives here; secretd's own
//! services (`objects`) and the member-to-member port (`peer`) do not.
//!
//! - `auth`: users, roles, tokens, and the check every service makes.
//! - `kv`, `lease`, `cluster`, `maintenance`: etcd's core services.
//! - `watch`: the Watch service, its wire encoding and its gRPC server.
//! - `lock`, `election`: the concurrency services, over `concurrency`.
//! - `reserved`: the key range etcd clients may not touch.
//! - `gateway`: the JSON gateway, calling the services above as their RPCs.
//!
//! Within: `gateway` uses every service, no service uses `gateway`;
//! `lock` and `election` use `concurrency`, which uses neither; every
//! service may use `auth` and `reserved`, which use no service.

pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod gateway;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod reserved;
pub mod unary;
pub mod watch;
