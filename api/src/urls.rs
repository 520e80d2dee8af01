//! etcd-style URL lists (`http://host:port,http://host:port`) to socket
//! addresses.

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};

/// Splits a comma-separated URL list, checking each is http(s)://host:port.
pub fn parse_list(flag: &str, s: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        bail!("{flag} is empty");
    }
    for u in &urls {
        host_port(u).with_context(|| format!("{flag}: {u:?}"))?;
    }
    Ok(urls)
}

/// `http://host:port/` → `host:port`.
pub fn host_port(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| anyhow!("URL must start with http:// or https://"))?;
    let hp = rest.trim_end_matches('/');
    let (host, port) = hp
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("URL needs a port"))?;
    if host.is_empty() || hp.contains('/') {
        bail!("URL must be scheme://host:port");
    }
    port.parse::<u16>()
        .map_err(|_| anyhow!("bad port {port:?}"))?;
    Ok(hp.to_string())
}

/// Resolves a URL to the addresses to listen on.
pub async fn resolve(url: &str) -> Result<Vec<SocketAddr>> {
    let hp = host_port(url)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&hp)
        .await
        .with_context(|| format!("resolve {hp}"))?
        .collect();
    if addrs.is_empty() {
        bail!("{hp} resolves to no address");
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_reject() {
        assert_eq!(
            host_port("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379"
        );
        assert_eq!(
            host_port("http://localhost:2379/").unwrap(),
            "localhost:2379"
        );
        for bad in [
            "127.0.0.1:2379",
            "http://:1",
            "http://a",
            "http://a:x",
            "http://a:1/path",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_list("--x", "http://a:1, http://b:2").unwrap().len(),
            2
        );
        assert!(parse_list("--x", " , ").is_err());
    }
}
