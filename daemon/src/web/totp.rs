//! TOTP second factor (RFC 6238 over RFC 4226 HOTP): HMAC-SHA1, 30-second
//! steps, 6 digits, which every authenticator app accepts.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Length of one time step in seconds.
pub const STEP_SECS: u64 = 30;
/// Steps accepted on either side of now (clock drift of the phone).
pub const WINDOW: u64 = 1;

/// Why a TOTP secret is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    /// The stored secret is not base32.
    #[error("the stored TOTP secret is not base32")]
    BadSecret,
}

/// A new random 160-bit secret, base32 without padding (as authenticator
/// apps expect it).
pub fn generate_secret() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 20]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    Zeroizing::new(data_encoding::BASE32_NOPAD.encode(raw.as_ref()))
}

fn key(secret_b32: &str) -> Result<Zeroizing<Vec<u8>>, TotpError> {
    data_encoding::BASE32_NOPAD
        .decode(secret_b32.trim().to_ascii_uppercase().as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| TotpError::BadSecret)
}

/// The 6-digit code of time step `step`.
pub fn code_for_step(secret_b32: &str, step: u64) -> Result<u32, TotpError> {
    let key = key(secret_b32)?;
    let mut mac = Hmac::<Sha1>::new_from_slice(&key).map_err(|_| TotpError::BadSecret)?;
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    // Dynamic truncation (RFC 4226 5.3).
    let off = (h[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    Ok(bin % 1_000_000)
}

/// The code valid at Unix time `unix_secs`.
pub fn code_at(secret_b32: &str, unix_secs: u64) -> Result<u32, TotpError> {
    code_for_step(secret_b32, unix_secs / STEP_SECS)
}

/// The time step `code` matches within [`WINDOW`] of `unix_secs`, if any.
/// Every candidate is compared in constant time, so timing does not tell
/// which step (or digit) matched.
pub fn matching_step(
    secret_b32: &str,
    code: &str,
    unix_secs: u64,
) -> Result<Option<u64>, TotpError> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        key(secret_b32)?;
        return Ok(None);
    }
    let now = unix_secs / STEP_SECS;
    let mut found = None;
    for step in now.saturating_sub(WINDOW)..=now + WINDOW {
        let want = format!("{:06}", code_for_step(secret_b32, step)?);
        if bool::from(want.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    Ok(found)
}

/// The `otpauth://` URI an authenticator app imports (or shows as QR code).
pub fn uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        secret_b32,
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, secret "12345678901234567890", last 6 digits.
        let secret = data_encoding::BASE32_NOPAD.encode(b"12345678901234567890");
        for (t, want) in [
            (59u64, 287_082u32),
            (1_111_111_109, 81_804),
            (1_111_111_111, 50_471),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
        ] {
            assert_eq!(code_at(&secret, t).unwrap(), want, "t={t}");
        }
    }

    #[test]
    fn window_and_garbage() {
        let s = generate_secret();
        let now = 1_700_000_000;
        let c = format!("{:06}", code_at(&s, now).unwrap());
        assert_eq!(matching_step(&s, &c, now).unwrap(), Some(now / STEP_SECS));
        assert!(matching_step(&s, &c, now + STEP_SECS).unwrap().is_some());
        assert!(matching_step(&s, &c, now + 3 * STEP_SECS)
            .unwrap()
            .is_none());
        for bad in ["", "12345", "1234567", "abcdef", "12 456"] {
            assert!(matching_step(&s, bad, now).unwrap().is_none(), "{bad:?}");
        }
        assert!(matching_step("not base32!", "123456", now).is_err());
    }
}
