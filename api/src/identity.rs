//! Who is asking: the role a client's certificate grants (`Role`), and
//! everything the services may check about a request's sender (`Caller`).
//! Set by `conn` for every request that passes the gate; read by `authz`,
//! `auth`, `audit`, the agent API and the peer API. Depends on nothing
//! else in the crate, so those modules depend on it and not on each other.

use std::net::SocketAddr;

use tonic::Request;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Node(String),
    Member(String),
    /// An orchestrator's secret driver (`secretd docker-plugin`): may
    /// fetch a secret's plaintext for one of the orchestrator's tasks,
    /// and nothing else.
    Driver(String),
    /// No client authentication on this listener (plaintext, or a peer
    /// port without `--peer-client-cert-auth`): a development setup,
    /// logged loudly at start. May do anything.
    Unauthenticated,
    /// A client without a certificate on an https client URL with
    /// `--client-cert-auth=false` (etcd's TLS without client
    /// certificates): etcd's API only, where etcd's users and roles are
    /// its only gate; never secretd's objects, settings or agent API.
    Anonymous,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Admin => write!(f, "admin"),
            Role::Node(n) => write!(f, "node agent {n}"),
            Role::Member(n) => write!(f, "member {n}"),
            Role::Driver(n) => write!(f, "secret driver {n}"),
            Role::Unauthenticated => write!(f, "an unauthenticated client"),
            Role::Anonymous => write!(f, "a client without a certificate"),
        }
    }
}

/// Who is asking: the role the connection's certificate grants, its
/// address, and what etcd's auth reads (the certificate's common name, the
/// token the request carries). `gate::Gate` puts one in every request it
/// lets through.
#[derive(Clone)]
pub struct Caller {
    pub role: Role,
    pub remote: Option<SocketAddr>,
    pub common_name: Option<String>,
    /// etcd's auth token: the `token` gRPC metadata or the `Authorization`
    /// header (gateway), `Bearer ` stripped.
    pub token: Option<String>,
}

/// Never prints the token: it is a credential.
impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("role", &self.role)
            .field("remote", &self.remote)
            .field("common_name", &self.common_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Caller {
    /// The caller of a request that passed the gate. A request without
    /// one did not pass it (every listener has the gate, so this is a
    /// wiring mistake) and is refused, never taken for unauthenticated.
    pub fn of<T>(req: &Request<T>) -> Result<Caller, tonic::Status> {
        req.extensions().get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!("a request reached a service without a caller");
            tonic::Status::permission_denied("no caller identity")
        })
    }
}
