//! Helpers shared by common's integration tests (each test file uses a part of them).
#![allow(dead_code)]

/// A CA, a server certificate for `localhost` signed by it and a client certificate
/// (`prometheus`), in a temp dir that holds `ca.crt`, `server.crt` and `server.key`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key: String,
    pub client_pem: String,
    pub client_key: String,
}

pub fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["prometheus".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let pki = Pki {
        dir,
        ca_pem: ca.pem(),
        server_pem: server.pem(),
        server_key: server_key.serialize_pem(),
        client_pem: client.pem(),
        client_key: client_key.serialize_pem(),
    };
    let d = pki.dir.path();
    std::fs::write(d.join("server.crt"), &pki.server_pem).unwrap();
    std::fs::write(d.join("server.key"), &pki.server_key).unwrap();
    std::fs::write(d.join("ca.crt"), &pki.ca_pem).unwrap();
    pki
}
