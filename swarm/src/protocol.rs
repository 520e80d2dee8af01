//! Docker's plugin protocol as a secret provider speaks it, and what the
//! plugin answers Swarm.
//!
//! dockerd finds the plugin by its socket, asks `POST /Plugin.Activate`
//! (answered `{"Implements": ["secretprovider"]}`), then, each time a
//! Swarm manager dispatches a task using a secret created with `--driver`,
//! `POST /SecretProvider.GetSecret` with the secret's name and labels and
//! the service's and task's names, IDs and image. The answer is `{"Value":
//! base64, "DoNotReuse": bool}` or `{"Err": "..."}`; shapes as swarmkit's
//! `manager/drivers/secrets.go` defines them.
//!
//! Which secretd secret a Swarm secret stands for comes from its labels:
//! `secretd.source=NAME` (else the Swarm secret's own name), and
//! `secretd.version=N` to pin a version. A secret that follows the current
//! version is answered `DoNotReuse`, so Swarm asks again for every task,
//! and a rotation in secretd reaches the next task; a pinned one may be
//! reused.

use std::collections::BTreeMap;
use std::future::Future;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use secretd_client::pb::secretstore::{DriverFetchRequest, DriverFetchResponse};

use crate::policy::Policy;

/// The label naming the secretd secret (a name or an ID).
pub const SOURCE_LABEL: &str = "secretd.source";
/// The label pinning a secretd secret version.
pub const VERSION_LABEL: &str = "secretd.version";
/// What `Plugin.Activate` answers.
pub const ACTIVATE_BODY: &str = r#"{"Implements":["secretprovider"]}"#;
/// The media type of Docker's plugin protocol.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// `SecretProvider.GetSecret`'s request: the fields dockerd 20.10 sends. Fields
/// Docker adds later are ignored; missing ones are empty.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GetSecretRequest {
    #[serde(rename = "SecretName")]
    pub secret_name: String,
    #[serde(rename = "SecretLabels")]
    pub secret_labels: BTreeMap<String, String>,
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "ServiceLabels")]
    pub service_labels: BTreeMap<String, String>,
    #[serde(rename = "TaskName")]
    pub task_name: String,
    #[serde(rename = "TaskID")]
    pub task_id: String,
    #[serde(rename = "TaskImage")]
    pub task_image: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
}

/// `SecretProvider.GetSecret`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GetSecretResponse {
    /// Base64, as Go encodes a `[]byte`.
    #[serde(rename = "Value", skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(rename = "Err", skip_serializing_if = "String::is_empty")]
    pub err: String,
    #[serde(rename = "DoNotReuse", skip_serializing_if = "std::ops::Not::not")]
    pub do_not_reuse: bool,
}

impl GetSecretResponse {
    pub fn refused(err: String) -> GetSecretResponse {
        GetSecretResponse {
            err,
            ..Default::default()
        }
    }
}

/// Where values come from: the cluster's Driver API (`cluster::Cluster`),
/// or a test's stand-in.
pub trait Source: Send + Sync {
    fn fetch(
        &self,
        req: DriverFetchRequest,
    ) -> impl Future<Output = Result<DriverFetchResponse, tonic::Status>> + Send;
}

/// The secretd secret and version a Swarm secret stands for.
pub fn source_of(req: &GetSecretRequest) -> Result<(String, u64), String> {
    let name = req
        .secret_labels
        .get(SOURCE_LABEL)
        .unwrap_or(&req.secret_name);
    if name.is_empty() {
        return Err(format!(
            "secretd: the secret has no name and no {SOURCE_LABEL} label"
        ));
    }
    let version = match req.secret_labels.get(VERSION_LABEL) {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "secretd: label {VERSION_LABEL}={v:?} is not a version number (1, 2, ...)"
                ))
            }
        },
    };
    Ok((name.clone(), version))
}

/// Decides, fetches and answers one `GetSecret`. Every outcome is logged
/// with Swarm's service and task (never the value).
pub async fn get_secret<S: Source>(
    req: &GetSecretRequest,
    policy: &Policy,
    source: &S,
) -> GetSecretResponse {
    let answer = decide_and_fetch(req, policy, source).await;
    match &answer {
        Ok((secret, version, _)) => tracing::info!(
            swarm_secret = %req.secret_name, secret = %secret, version, service = %req.service_name,
            task = %req.task_name, "delivered"
        ),
        Err(e) => tracing::warn!(
            swarm_secret = %req.secret_name, service = %req.service_name, task = %req.task_name,
            error = %e, "refused"
        ),
    }
    match answer {
        Ok((_, _, r)) => r,
        Err(e) => GetSecretResponse::refused(e),
    }
}

async fn decide_and_fetch<S: Source>(
    req: &GetSecretRequest,
    policy: &Policy,
    source: &S,
) -> Result<(String, u64, GetSecretResponse), String> {
    let (secret, pinned) = source_of(req)?;
    if !policy.allows(&req.service_name, &secret) {
        return Err(format!(
            "secretd: service {:?} may not receive secret {secret:?}: no rule of the plugin's policy allows it",
            req.service_name
        ));
    }
    let fetched = source
        .fetch(DriverFetchRequest {
            secret: secret.clone(),
            version: pinned,
            service_name: req.service_name.clone(),
            service_id: req.service_id.clone(),
            task_name: req.task_name.clone(),
            task_id: req.task_id.clone(),
            node_id: req.node_id.clone(),
            image: req.task_image.clone(),
        })
        .await
        .map_err(|s| format!("secretd: cannot fetch secret {secret:?}: {}", s.message()))?;
    let response = GetSecretResponse {
        value: Some(base64::engine::general_purpose::STANDARD.encode(&fetched.data)),
        err: String::new(),
        do_not_reuse: pinned == 0,
    };
    Ok((secret, fetched.version, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Source for Fixed {
        async fn fetch(
            &self,
            req: DriverFetchRequest,
        ) -> Result<DriverFetchResponse, tonic::Status> {
            match req.secret.as_str() {
                "db_pw" => Ok(DriverFetchResponse {
                    data: format!("pw-v{}", req.version.max(2)).into_bytes(),
                    secret_id: "id1".into(),
                    version: req.version.max(2),
                }),
                _ => Err(tonic::Status::not_found(format!(
                    "secret {} not found",
                    req.secret
                ))),
            }
        }
    }

    fn request(body: &str) -> GetSecretRequest {
        serde_json::from_str(body).unwrap()
    }

    fn policy() -> Policy {
        Policy::parse(r#"{"rules":[{"services":["web"],"secrets":["db_pw","gone"]}]}"#).unwrap()
    }

    /// dockerd 20.10.24's request (Debian 12's), as recorded here.
    const RECORDED: &str = r#"{"SecretName":"ext","SecretLabels":{"secretd.source":"db_pw"},"ServiceID":"wso2kb5txm4kr3lwwvvtq4oyk","ServiceName":"web","TaskID":"vw4hervmm370lhojjw1moy7lp","TaskName":"web.1.vw4hervmm370lhojjw1moy7lp","TaskImage":"sd/busybox:local","NodeID":"qufeawt8e4osmythedxjhr8ea","ServiceEndpointSpec":{}}"#;

    #[tokio::test]
    async fn a_current_secret_is_delivered_not_to_be_reused() {
        let r = get_secret(&request(RECORDED), &policy(), &Fixed).await;
        assert_eq!(r.err, "");
        assert_eq!(r.value.as_deref(), Some("cHctdjI=")); // "pw-v2"
        assert!(r.do_not_reuse);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"Value":"cHctdjI=","DoNotReuse":true}"#);
    }

    #[tokio::test]
    async fn a_pinned_version_may_be_reused() {
        let mut req = request(RECORDED);
        req.secret_labels.insert(VERSION_LABEL.into(), "7".into());
        let r = get_secret(&req, &policy(), &Fixed).await;
        assert_eq!(r.value.as_deref(), Some("cHctdjc=")); // "pw-v7"
        assert!(!r.do_not_reuse);
    }

    #[tokio::test]
    async fn refusals_say_why() {
        let mut other = request(RECORDED);
        other.service_name = "bad".into();
        let r = get_secret(&other, &policy(), &Fixed).await;
        assert_eq!(
            r.err,
            r#"secretd: service "bad" may not receive secret "db_pw": no rule of the plugin's policy allows it"#
        );
        assert_eq!(r.value, None);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            format!(r#"{{"Err":{}}}"#, serde_json::to_string(&r.err).unwrap())
        );

        let mut pin = request(RECORDED);
        pin.secret_labels.insert(VERSION_LABEL.into(), "0".into());
        let r = get_secret(&pin, &policy(), &Fixed).await;
        assert!(
            r.err
                .contains(r#"label secretd.version="0" is not a version number"#),
            "{}",
            r.err
        );

        let mut gone = request(RECORDED);
        gone.secret_labels
            .insert(SOURCE_LABEL.into(), "gone".into());
        let r = get_secret(&gone, &policy(), &Fixed).await;
        assert_eq!(
            r.err,
            r#"secretd: cannot fetch secret "gone": secret gone not found"#
        );

        let r = get_secret(&request("{}"), &policy(), &Fixed).await;
        assert!(
            r.err.contains("no name and no secretd.source label"),
            "{}",
            r.err
        );
    }

    #[test]
    fn without_a_source_label_the_swarm_name_is_the_secret() {
        let r = request(r#"{"SecretName":"db_pw","NewField":[1,2]}"#);
        assert_eq!(source_of(&r).unwrap(), ("db_pw".to_string(), 0));
    }
}
