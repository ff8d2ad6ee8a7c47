//! When a certificate tokex presents expires, for
//! `tokex_credential_expiry_timestamp_seconds` (`crate::metrics` dates JWT credentials by
//! their `exp`). A client certificate that lapses fails every exchange at once; the date
//! is worth an alert days before.

/// A certificate's `notAfter`.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
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
