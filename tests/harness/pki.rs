//! Certificates for servers of the tests' own, made with `rcgen`.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use sluice_devkit::unique_suffix;

/// A CA, a server certificate for 127.0.0.1 and a client certificate it
/// signed, and a second CA that signed nothing here; removed on drop.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = std::env::temp_dir().join(format!("sluice-pki-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        let ca_params = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params
        };
        let ca =
            CertifiedIssuer::self_signed(ca_params("sluice test CA"), KeyPair::generate().unwrap())
                .unwrap();
        write("ca.pem", ca.pem());
        for (name, names, usage) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
                // Cluster routes present it as a client too.
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            (
                "client",
                vec!["sluice".to_owned()],
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = usage;
            let cert = params.signed_by(&key, &ca).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        let other =
            CertifiedIssuer::self_signed(ca_params("another CA"), KeyPair::generate().unwrap())
                .unwrap();
        write("other-ca.pem", other.pem());
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The client settings that trust `ca` and present the client certificate.
    pub fn client_login(&self, ca: &str) -> Vec<(String, String)> {
        vec![
            ("SLUICE_NATS_TLS_CA".into(), self.path(ca)),
            ("SLUICE_NATS_TLS_CERT".into(), self.path("client.pem")),
            ("SLUICE_NATS_TLS_KEY".into(), self.path("client-key.pem")),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
