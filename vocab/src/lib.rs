//! The few words the server side (store, secrets) and the client side
//! (client, secretctl) must agree on. They cannot share a crate otherwise:
//! the layering rules keep clients off the server's crates and the server
//! off the wire's, so what both need lives here, below both, with no
//! dependencies at all.

/// Secrets or configs: the two kinds of object Docker's commands manage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    /// The word Docker's messages use.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

/// The end of the range of keys that start with `prefix`, as etcd's
/// clients compute it (`clientv3.GetPrefixRangeEnd`): the prefix with its
/// last byte below 0xff incremented and what follows dropped, or `[0]`
/// (every key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn words_are_dockers() {
        assert_eq!(Kind::Secret.word(), "secret");
        assert_eq!(Kind::Config.word(), "config");
    }
}
