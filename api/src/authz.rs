//! The role matrix: which certificate role may call which RPC, in one
//! table keyed by gRPC path (`/package.Service/Method`).
//!
//! Every listener's requests pass through `decide` before any service sees
//! them (`gate::Gate`), so a service cannot forget a check. Services that
//! bind a request to the caller's identity (the agent API: a node
//! certificate asks only as its own node, and only for its own tasks) do
//! that second check themselves, with the `Caller` this gate leaves in the
//! request.
//!
//! A path that is not in the table is not served (UNIMPLEMENTED), and
//! `tests::every_rpc_is_classified` fails for an RPC added to a proto
//! without a row here.

use crate::identity::Role;

/// Who may call an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Operators: secretd's admin APIs (secrets, configs, tasks,
    /// settings, keys). Never a secret's plaintext.
    Admin,
    /// etcd's API (and `/metrics`, which etcd serves on its client port):
    /// the admin certificate, and, on a client listener with
    /// `--client-cert-auth=false`, a client without a certificate, whom
    /// etcd's users and roles alone then govern.
    Etcd,
    /// A node agent, for its own node only (bound in the service). The
    /// admin is refused: it could otherwise read every secret.
    NodeAgent,
    /// Another member of the cluster, on the peer port.
    Member,
    /// An orchestrator's secret driver: one secret's plaintext for one of
    /// the orchestrator's tasks. The admin is refused, as for `NodeAgent`.
    Driver,
}

/// Every RPC secretd serves, with who may call it.
pub const MATRIX: &[(&str, Access)] = &[
    ("/etcdserverpb.KV/Range", Access::Etcd),
    ("/etcdserverpb.KV/Put", Access::Etcd),
    ("/etcdserverpb.KV/DeleteRange", Access::Etcd),
    ("/etcdserverpb.KV/Txn", Access::Etcd),
    ("/etcdserverpb.KV/Compact", Access::Etcd),
    ("/etcdserverpb.Watch/Watch", Access::Etcd),
    ("/etcdserverpb.Lease/LeaseGrant", Access::Etcd),
    ("/etcdserverpb.Lease/LeaseRevoke", Access::Etcd),
    ("/etcdserverpb.Lease/LeaseKeepAlive", Access::Etcd),
    ("/etcdserverpb.Lease/LeaseTimeToLive", Access::Etcd),
    ("/etcdserverpb.Lease/LeaseLeases", Access::Etcd),
    ("/etcdserverpb.Cluster/MemberAdd", Access::Etcd),
    ("/etcdserverpb.Cluster/MemberRemove", Access::Etcd),
    ("/etcdserverpb.Cluster/MemberUpdate", Access::Etcd),
    ("/etcdserverpb.Cluster/MemberList", Access::Etcd),
    ("/etcdserverpb.Cluster/MemberPromote", Access::Etcd),
    ("/etcdserverpb.Maintenance/Alarm", Access::Etcd),
    ("/etcdserverpb.Maintenance/Status", Access::Etcd),
    ("/etcdserverpb.Maintenance/Defragment", Access::Etcd),
    ("/etcdserverpb.Maintenance/Hash", Access::Etcd),
    ("/etcdserverpb.Maintenance/HashKV", Access::Etcd),
    ("/etcdserverpb.Maintenance/Snapshot", Access::Etcd),
    ("/etcdserverpb.Maintenance/MoveLeader", Access::Etcd),
    ("/etcdserverpb.Auth/AuthEnable", Access::Etcd),
    ("/etcdserverpb.Auth/AuthDisable", Access::Etcd),
    ("/etcdserverpb.Auth/AuthStatus", Access::Etcd),
    ("/etcdserverpb.Auth/Authenticate", Access::Etcd),
    ("/etcdserverpb.Auth/UserAdd", Access::Etcd),
    ("/etcdserverpb.Auth/UserGet", Access::Etcd),
    ("/etcdserverpb.Auth/UserList", Access::Etcd),
    ("/etcdserverpb.Auth/UserDelete", Access::Etcd),
    ("/etcdserverpb.Auth/UserChangePassword", Access::Etcd),
    ("/etcdserverpb.Auth/UserGrantRole", Access::Etcd),
    ("/etcdserverpb.Auth/UserRevokeRole", Access::Etcd),
    ("/etcdserverpb.Auth/RoleAdd", Access::Etcd),
    ("/etcdserverpb.Auth/RoleGet", Access::Etcd),
    ("/etcdserverpb.Auth/RoleList", Access::Etcd),
    ("/etcdserverpb.Auth/RoleDelete", Access::Etcd),
    ("/etcdserverpb.Auth/RoleGrantPermission", Access::Etcd),
    ("/etcdserverpb.Auth/RoleRevokePermission", Access::Etcd),
    ("/v3lockpb.Lock/Lock", Access::Etcd),
    ("/v3lockpb.Lock/Unlock", Access::Etcd),
    ("/v3electionpb.Election/Campaign", Access::Etcd),
    ("/v3electionpb.Election/Proclaim", Access::Etcd),
    ("/v3electionpb.Election/Leader", Access::Etcd),
    ("/v3electionpb.Election/Observe", Access::Etcd),
    ("/v3electionpb.Election/Resign", Access::Etcd),
    ("/secretstore.v1.Secrets/Create", Access::Admin),
    ("/secretstore.v1.Secrets/Inspect", Access::Admin),
    ("/secretstore.v1.Secrets/List", Access::Admin),
    ("/secretstore.v1.Secrets/Remove", Access::Admin),
    ("/secretstore.v1.Secrets/Rotate", Access::Admin),
    ("/secretstore.v1.Configs/Create", Access::Admin),
    ("/secretstore.v1.Configs/Inspect", Access::Admin),
    ("/secretstore.v1.Configs/List", Access::Admin),
    ("/secretstore.v1.Configs/Remove", Access::Admin),
    ("/secretstore.v1.Tasks/Create", Access::Admin),
    ("/secretstore.v1.Tasks/Inspect", Access::Admin),
    ("/secretstore.v1.Tasks/List", Access::Admin),
    ("/secretstore.v1.Tasks/Remove", Access::Admin),
    ("/secretstore.v1.Admin/GetSettings", Access::Admin),
    ("/secretstore.v1.Admin/UpdateSettings", Access::Admin),
    ("/secretstore.v1.Admin/SetAutolock", Access::Admin),
    ("/secretstore.v1.Admin/UnlockKey", Access::Admin),
    ("/secretstore.v1.Admin/Unlock", Access::Admin),
    ("/secretstore.v1.Admin/RotateKey", Access::Admin),
    ("/secretstore.v1.Agent/Watch", Access::NodeAgent),
    ("/secretstore.v1.Agent/Fetch", Access::NodeAgent),
    ("/secretstore.v1.Agent/InspectTask", Access::NodeAgent),
    ("/secretstore.v1.Driver/Fetch", Access::Driver),
    ("/secretd.raft.v1.Raft/Send", Access::Member),
    ("/secretd.raft.v1.Raft/SendSnapshot", Access::Member),
    ("/secretd.raft.v1.Raft/ClusterInfo", Access::Member),
    ("/secretd.raft.v1.Raft/PromoteMember", Access::Member),
    ("/secretd.raft.v1.Raft/FetchKek", Access::Member),
    ("/secretd.raft.v1.Raft/HashKv", Access::Member),
];

/// HTTP paths the gate decides like RPCs (not in any proto).
pub const HTTP_PATHS: &[(&str, Access)] = &[("/metrics", Access::Etcd)];

/// etcd's JSON gateway: each route (under every prefix of
/// `GATEWAY_PREFIXES`) and the RPC it calls, which decides who may use it.
/// Paths are etcd 3.4's, additional bindings included, and etcd 3.5's
/// for Lock and Election.
pub const GATEWAY: &[(&str, &str)] = &[
    ("kv/range", "/etcdserverpb.KV/Range"),
    ("kv/put", "/etcdserverpb.KV/Put"),
    ("kv/deleterange", "/etcdserverpb.KV/DeleteRange"),
    ("kv/txn", "/etcdserverpb.KV/Txn"),
    ("kv/compaction", "/etcdserverpb.KV/Compact"),
    ("watch", "/etcdserverpb.Watch/Watch"),
    ("lease/grant", "/etcdserverpb.Lease/LeaseGrant"),
    ("lease/revoke", "/etcdserverpb.Lease/LeaseRevoke"),
    ("kv/lease/revoke", "/etcdserverpb.Lease/LeaseRevoke"),
    ("lease/keepalive", "/etcdserverpb.Lease/LeaseKeepAlive"),
    ("lease/timetolive", "/etcdserverpb.Lease/LeaseTimeToLive"),
    ("kv/lease/timetolive", "/etcdserverpb.Lease/LeaseTimeToLive"),
    ("lease/leases", "/etcdserverpb.Lease/LeaseLeases"),
    ("kv/lease/leases", "/etcdserverpb.Lease/LeaseLeases"),
    ("cluster/member/add", "/etcdserverpb.Cluster/MemberAdd"),
    (
        "cluster/member/remove",
        "/etcdserverpb.Cluster/MemberRemove",
    ),
    (
        "cluster/member/update",
        "/etcdserverpb.Cluster/MemberUpdate",
    ),
    ("cluster/member/list", "/etcdserverpb.Cluster/MemberList"),
    (
        "cluster/member/promote",
        "/etcdserverpb.Cluster/MemberPromote",
    ),
    ("maintenance/alarm", "/etcdserverpb.Maintenance/Alarm"),
    ("maintenance/status", "/etcdserverpb.Maintenance/Status"),
    (
        "maintenance/defragment",
        "/etcdserverpb.Maintenance/Defragment",
    ),
    ("maintenance/hash", "/etcdserverpb.Maintenance/Hash"),
    ("maintenance/hashkv", "/etcdserverpb.Maintenance/HashKV"),
    ("maintenance/snapshot", "/etcdserverpb.Maintenance/Snapshot"),
    (
        "maintenance/transfer-leadership",
        "/etcdserverpb.Maintenance/MoveLeader",
    ),
    ("auth/enable", "/etcdserverpb.Auth/AuthEnable"),
    ("auth/disable", "/etcdserverpb.Auth/AuthDisable"),
    ("auth/status", "/etcdserverpb.Auth/AuthStatus"),
    ("auth/authenticate", "/etcdserverpb.Auth/Authenticate"),
    ("auth/user/add", "/etcdserverpb.Auth/UserAdd"),
    ("auth/user/get", "/etcdserverpb.Auth/UserGet"),
    ("auth/user/list", "/etcdserverpb.Auth/UserList"),
    ("auth/user/delete", "/etcdserverpb.Auth/UserDelete"),
    (
        "auth/user/changepw",
        "/etcdserverpb.Auth/UserChangePassword",
    ),
    ("auth/user/grant", "/etcdserverpb.Auth/UserGrantRole"),
    ("auth/user/revoke", "/etcdserverpb.Auth/UserRevokeRole"),
    ("auth/role/add", "/etcdserverpb.Auth/RoleAdd"),
    ("auth/role/get", "/etcdserverpb.Auth/RoleGet"),
    ("auth/role/list", "/etcdserverpb.Auth/RoleList"),
    ("auth/role/delete", "/etcdserverpb.Auth/RoleDelete"),
    ("auth/role/grant", "/etcdserverpb.Auth/RoleGrantPermission"),
    (
        "auth/role/revoke",
        "/etcdserverpb.Auth/RoleRevokePermission",
    ),
    // etcd 3.5's lock and election gateways (their protos' annotations).
    ("lock/lock", "/v3lockpb.Lock/Lock"),
    ("lock/unlock", "/v3lockpb.Lock/Unlock"),
    ("election/campaign", "/v3electionpb.Election/Campaign"),
    ("election/proclaim", "/v3electionpb.Election/Proclaim"),
    ("election/leader", "/v3electionpb.Election/Leader"),
    ("election/observe", "/v3electionpb.Election/Observe"),
    ("election/resign", "/v3electionpb.Election/Resign"),
];

/// etcd 3.4 serves its gateway under both.
pub const GATEWAY_PREFIXES: &[&str] = &["/v3/", "/v3beta/"];

/// Paths anyone who may connect may read (etcd serves them without auth):
/// no data behind them. Every other path must be in `MATRIX` or
/// `GATEWAY`, or the gate answers "not found" itself, so a route added
/// without a row here cannot be reached at all.
pub const PUBLIC_PATHS: &[&str] = &["/version", "/health", "/livez", "/readyz"];

/// The RPC a gateway path calls.
pub fn gateway_rpc(path: &str) -> Option<&'static str> {
    let rest = GATEWAY_PREFIXES.iter().find_map(|p| path.strip_prefix(p))?;
    GATEWAY_RPC.get(rest).copied()
}

/// What the gate does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// PERMISSION_DENIED with this message.
    Deny(String),
    /// Not an RPC secretd serves.
    Unknown,
}

/// `MATRIX` and `GATEWAY` as maps: every request is decided, so the
/// lookups are hashed, not scans.
static ACCESS: std::sync::LazyLock<std::collections::HashMap<&'static str, Access>> =
    std::sync::LazyLock::new(|| MATRIX.iter().chain(HTTP_PATHS).copied().collect());
static GATEWAY_RPC: std::sync::LazyLock<std::collections::HashMap<&'static str, &'static str>> =
    std::sync::LazyLock::new(|| GATEWAY.iter().copied().collect());

pub fn access(path: &str) -> Option<Access> {
    ACCESS.get(path).copied()
}

/// May `role` call `path`?
///
/// `Role::Unauthenticated` is a listener without client certificates
/// (plaintext, or a peer port without `--peer-client-cert-auth`): there is
/// no identity to check, so everything is allowed, and the member says so
/// loudly at start (see the threat model in ARCHITECTURE.md).
/// `Role::Anonymous`, a client without a certificate where TLS asks for
/// none (`--client-cert-auth=false`), gets etcd's API only.
pub fn decide(role: &Role, path: &str) -> Decision {
    let Some(access) = access(path) else {
        return Decision::Unknown;
    };
    let ok = matches!(
        (role, access),
        (Role::Unauthenticated, _)
            | (Role::Admin, Access::Admin | Access::Etcd)
            | (Role::Anonymous, Access::Etcd)
            | (Role::Node(_), Access::NodeAgent)
            | (Role::Member(_), Access::Member)
            | (Role::Driver(_), Access::Driver)
    );
    if ok {
        return Decision::Allow;
    }
    let why = match access {
        Access::Admin => "it is for admin certificates only",
        Access::Etcd => "it is etcd's API, for admin certificates or clients without one",
        Access::NodeAgent => "only a node agent's certificate may use it, for its own node",
        Access::Member => "it is for cluster members only (the peer port)",
        Access::Driver => "only a secret driver's certificate may use it",
    };
    Decision::Deny(format!("{role} may not call {path}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    include!(concat!(env!("OUT_DIR"), "/rpc_list.rs"));

    #[test]
    fn gateway_routes_call_served_rpcs() {
        for (route, rpc) in GATEWAY {
            assert!(
                access(rpc).is_some(),
                "{route} calls {rpc}, which is not served"
            );
            for p in GATEWAY_PREFIXES {
                assert_eq!(gateway_rpc(&format!("{p}{route}")), Some(*rpc));
            }
        }
        assert_eq!(gateway_rpc("/v3/kv/nope"), None);
        assert_eq!(gateway_rpc("/v3/kv/%72ange"), None);
        assert_eq!(gateway_rpc("/v3/kv/range/"), None);
        assert_eq!(gateway_rpc("/v2/keys"), None);
    }

    #[test]
    fn every_rpc_is_classified() {
        for rpc in ALL_RPCS {
            assert!(
                access(rpc).is_some(),
                "{rpc} has no row in authz::MATRIX: decide who may call it"
            );
        }
        for (p, _) in MATRIX {
            assert!(
                ALL_RPCS.contains(p),
                "{p} is in the matrix but no proto has it"
            );
        }
        let mut seen = std::collections::HashSet::new();
        assert!(MATRIX.iter().all(|(p, _)| seen.insert(*p)), "duplicate row");
    }

    /// Each role × each RPC, spelled out: the admin gets every client API
    /// but the agent's, a node agent only the agent's, a member only raft,
    /// a client without a certificate only etcd's.
    #[test]
    fn each_role_by_each_rpc() {
        let roles = [
            Role::Admin,
            Role::Node("n1".into()),
            Role::Member("n2".into()),
            Role::Driver("swarm".into()),
            Role::Unauthenticated,
            Role::Anonymous,
        ];
        let paths = ALL_RPCS.iter().chain(HTTP_PATHS.iter().map(|(p, _)| p));
        for rpc in paths {
            let agent = rpc.starts_with("/secretstore.v1.Agent/");
            let raft = rpc.starts_with("/secretd.raft.v1.Raft/");
            let driver = rpc.starts_with("/secretstore.v1.Driver/");
            let etcd = rpc.starts_with("/etcdserverpb.")
                || rpc.starts_with("/v3lockpb.")
                || rpc.starts_with("/v3electionpb.")
                || *rpc == "/metrics";
            for role in &roles {
                let expect = match role {
                    Role::Admin => !agent && !raft && !driver,
                    Role::Node(_) => agent,
                    Role::Member(_) => raft,
                    Role::Driver(_) => driver,
                    Role::Unauthenticated => true,
                    Role::Anonymous => etcd,
                };
                let got = decide(role, rpc);
                assert_eq!(got == Decision::Allow, expect, "{role} × {rpc}: {got:?}");
            }
        }
        assert_eq!(decide(&Role::Admin, "/x.Y/Z"), Decision::Unknown);
        match decide(&Role::Admin, "/secretstore.v1.Agent/Fetch") {
            Decision::Deny(m) => assert!(m.contains("node agent"), "{m}"),
            d => panic!("{d:?}"),
        }
    }
}
