use super::*;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.the-remote-readers-token.signature";

/// A kubeconfig as create-remote-secret writes it, with `user` and `cluster` extras spliced in.
fn kubeconfig(cluster_extra: &str, user_extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: cluster2
  cluster:
    server: https://10.0.0.2:6443
    certificate-authority-data: LS0tLS1CRUdJTg==
{cluster_extra}
contexts:
- name: cluster2
  context: {{cluster: cluster2, user: reader}}
current-context: cluster2
users:
- name: reader
  user:
    token: {TOKEN}
{user_extra}
"
    )
}

#[test]
fn a_plain_remote_secret_passes_with_only_what_a_client_needs() {
    let yaml = kubeconfig(
        "    extensions: [{name: x, extension: {a: 1}}]",
        "    as: admin",
    );
    let kc = sanitize(&yaml, false).expect("accepted");
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.2:6443"));
    assert_eq!(
        cluster.certificate_authority_data.as_deref(),
        Some("LS0tLS1CRUdJTg==")
    );
    assert!(
        cluster.extensions.is_none(),
        "unknown fields are not carried over"
    );
    let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(user.token.as_ref().unwrap().expose_secret(), TOKEN);
    assert!(
        user.impersonate.is_none(),
        "impersonation is not carried over"
    );
}

/// Istio's sanitizeKubeConfig refuses exec, auth providers, tokenFile and client certificate
/// or key files; meshfed also refuses CA files, skipped TLS verification and plain HTTP.
#[test]
fn every_option_that_runs_code_reads_files_or_skips_tls_is_refused() {
    let cases = [
        (
            "",
            "    exec: {apiVersion: client.authentication.k8s.io/v1, command: sh, args: [-c, id]}",
            "exec",
        ),
        (
            "",
            "    auth-provider: {name: gcp, config: {cmd-path: /bin/sh}}",
            "auth-provider",
        ),
        (
            "",
            "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
            "tokenFile",
        ),
        (
            "",
            "    client-certificate: /etc/cert.pem",
            "client-certificate",
        ),
        ("", "    client-key: /etc/key.pem", "client-key"),
        (
            "    certificate-authority: /etc/ca.pem",
            "",
            "certificate-authority",
        ),
        (
            "    insecure-skip-tls-verify: true",
            "",
            "insecure-skip-tls-verify",
        ),
    ];
    for (cluster, user, option) in cases {
        let yaml = kubeconfig(cluster, user);
        let err = sanitize(&yaml, false).expect_err(option);
        assert!(err.to_string().contains(option), "{option}: {err}");
        assert!(!err.to_string().contains(TOKEN), "{err}");
        assert!(
            sanitize(&yaml, true).is_ok(),
            "{option} is accepted when allowed"
        );
    }
    let http = kubeconfig("", "").replace("https://", "http://");
    assert!(matches!(
        sanitize(&http, false),
        Err(KubeconfigError::Refused(_))
    ));
}

#[test]
fn a_refused_option_in_a_context_not_in_use_is_refused_too() {
    let yaml = format!(
        "{}- name: other\n  user:\n    exec: {{command: sh}}\n",
        kubeconfig("", "")
    );
    assert_eq!(
        sanitize(&yaml, false).err(),
        Some(KubeconfigError::Refused("exec"))
    );
}

/// serde's own messages quote the values they choke on: the error names only the place.
#[test]
fn a_broken_kubeconfig_names_the_place_and_not_the_content() {
    let yaml = kubeconfig("", "").replace(&format!("token: {TOKEN}"), &format!("token: [{TOKEN}]"));
    let err = sanitize(&yaml, false).unwrap_err();
    assert!(matches!(err, KubeconfigError::Parse { .. }), "{err}");
    assert!(
        !err.to_string().contains("the-remote-readers-token"),
        "{err}"
    );
    let no_context =
        kubeconfig("", "").replace("current-context: cluster2", "current-context: nope");
    assert_eq!(
        sanitize(&no_context, false).err(),
        Some(KubeconfigError::NoContext("no current context"))
    );
}

#[test]
fn errors_are_cleaned_of_credentials_and_their_fragments() {
    let secrets = vec![TOKEN.to_string()];
    let text = format!("bad header {TOKEN} and a piece: {}", &TOKEN[5..30]);
    let clean = redact(&text, &secrets);
    assert!(!clean.contains(&TOKEN[5..30]), "{clean}");
    assert!(clean.starts_with("bad header [redacted]"), "{clean}");
}
