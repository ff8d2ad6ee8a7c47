//! When the credentials tokex presents expire, for
//! `tokex_credential_expiry_timestamp_seconds`. A client certificate that lapses, or a
//! projected token that stopped being refreshed, fails every exchange at once; the date
//! is worth an alert days before.

use crate::config::model::{Authority, ClientAuth};

/// The credentials of `authority` that carry an expiry, by kind, in Unix seconds.
pub fn of_authority(authority: &Authority) -> Vec<(&'static str, i64)> {
    let mut found = Vec::new();
    match &authority.auth {
        ClientAuth::TlsClientAuth { identity } => {
            if let Some(at) = identity.with(|i| i.certs.first().and_then(|c| not_after(c))) {
                found.push(("client_certificate", at));
            }
        }
        ClientAuth::ClientAssertion { assertion, .. } => {
            if let Some(at) = assertion.with(|a| jwt_exp(a.expose())) {
                found.push(("client_assertion", at));
            }
        }
        _ => {}
    }
    if let Some(at) = authority
        .actor_token
        .as_ref()
        .and_then(|actor| actor.token.with(|a| jwt_exp(a.token.expose())))
    {
        found.push(("actor_token", at));
    }
    found
}

/// A certificate's `notAfter`.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn jwt_exp(token: &str) -> Option<i64> {
    crate::jwt::unverified_exp(token).and_then(|exp| i64::try_from(exp).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_certificates_not_after() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["tokex".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&key).unwrap();
        // 2031-05-17T00:00:00Z
        assert_eq!(not_after(cert.der()), Some(1_936_742_400));
        assert_eq!(not_after(b"not a certificate"), None);
    }
}
