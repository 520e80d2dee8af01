//! Cluster identity: member and cluster ids, and the `--initial-cluster`
//! string. Ids are derived as etcd derives them (a hash of the member's peer
//! URLs and the cluster token), so every member computes the same ids from
//! the same flags without talking to the others.

use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let d = h.finalize();
    let id = u64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]));
    // Raft reserves id 0 for "none".
    id.max(1)
}

pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    hash_u64(&[urls.join("").as_bytes(), token.as_bytes()])
}

pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
    hash_u64(&[&bytes])
}

/// Parses `n1=http://a:2380,n2=http://b:2380` (a name may repeat to give a
/// member several URLs), as etcd's `--initial-cluster`.
pub fn parse_initial_cluster(s: &str, token: &str) -> Result<Vec<Member>> {
    let mut members: Vec<Member> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            StoreError::InvalidArgument(format!("--initial-cluster entry {part:?} is not NAME=URL"))
        })?;
        if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(StoreError::InvalidArgument(format!(
                "--initial-cluster entry {part:?}: want NAME=http(s)://HOST:PORT"
            )));
        }
        match members.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url.to_string()),
            None => members.push(Member {
                id: 0,
                name: name.to_string(),
                peer_urls: vec![url.to_string()],
            }),
        }
    }
    if members.is_empty() {
        return Err(StoreError::InvalidArgument(
            "--initial-cluster is empty".into(),
        ));
    }
    for m in &mut members {
        m.id = member_id(&m.peer_urls, token);
    }
    for (i, m) in members.iter().enumerate() {
        if members[..i].iter().any(|o| o.id == m.id) {
            return Err(StoreError::InvalidArgument(format!(
                "--initial-cluster: member {:?} has the same peer URLs as another",
                m.name
            )));
        }
    }
    Ok(members)
}

/// Members as stored in the meta column family: one line per member,
/// `id<TAB>name<TAB>url,url`.
pub fn encode_members(ms: &[Member]) -> Vec<u8> {
    ms.iter()
        .map(|m| format!("{:x}\t{}\t{}\n", m.id, m.name, m.peer_urls.join(",")))
        .collect::<String>()
        .into_bytes()
}

pub fn decode_members(b: &[u8]) -> Result<Vec<Member>> {
    let s = std::str::from_utf8(b)
        .map_err(|_| StoreError::Storage("member list is not UTF-8".into()))?;
    s.lines()
        .map(|l| {
            let mut it = l.split('\t');
            let (Some(id), Some(name), Some(urls), None) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(StoreError::Storage(format!("corrupt member record {l:?}")));
            };
            Ok(Member {
                id: u64::from_str_radix(id, 16)
                    .map_err(|_| StoreError::Storage(format!("corrupt member id {id:?}")))?,
                name: name.to_string(),
                peer_urls: urls.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_round_trip() {
        let ms = parse_initial_cluster(
            "a=http://127.0.0.1:1,b=http://127.0.0.1:2,a=http://127.0.0.1:3",
            "t",
        )
        .unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].peer_urls.len(), 2);
        assert_ne!(ms[0].id, ms[1].id);
        assert_eq!(decode_members(&encode_members(&ms)).unwrap(), ms);
        // The token changes every id, so two clusters never mix members.
        let other =
            parse_initial_cluster("a=http://127.0.0.1:1,a=http://127.0.0.1:3", "u").unwrap();
        assert_ne!(other[0].id, ms[0].id);
        for bad in ["", "a", "a=ftp://x", "=http://x", "a=http://x,b=http://x"] {
            assert!(parse_initial_cluster(bad, "t").is_err(), "{bad:?}");
        }
    }
}
