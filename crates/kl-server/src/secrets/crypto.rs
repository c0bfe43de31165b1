//! Sealing secret values at rest: ChaCha20-Poly1305 under a platform key, a random 96-bit
//! nonce per value, and the value's place (tenant, secret, key) as associated data, so a
//! ciphertext copied to another row fails to open. Pure apart from the random nonce.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use sha2::{Digest, Sha256};

/// Bytes of a key.
pub(crate) const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// Why a key or a sealed value was refused. No variant carries key or value bytes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CryptoError {
    /// A key is not base64 of 32 bytes.
    #[error("a secrets key must be base64 of {KEY_BYTES} bytes (e.g. `head -c 32 /dev/urandom | base64`)")]
    BadKey,
    /// The value was sealed under a key the ring no longer holds.
    #[error("secret value sealed under key {0}, which this server does not have")]
    UnknownKey(String),
    /// Authentication failed: wrong key, wrong place, or altered bytes.
    #[error("secret value does not authenticate (altered, moved, or sealed under another key)")]
    Unauthentic,
}

/// One platform key. Its id is a hash of the key, so the same key has the same id wherever
/// it is given (file or environment).
#[derive(Clone)]
pub(crate) struct Key {
    id: String,
    bytes: [u8; KEY_BYTES],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub(crate) fn from_bytes(bytes: [u8; KEY_BYTES]) -> Key {
        let digest = Sha256::new()
            .chain_update(b"kl-secrets-key-id\0")
            .chain_update(bytes)
            .finalize();
        Key {
            id: hex::encode(&digest[..8]),
            bytes,
        }
    }

    /// A fresh random key.
    pub(crate) fn generate() -> Key {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        Key::from_bytes(bytes)
    }

    pub(crate) fn from_base64(text: &str) -> Result<Key, CryptoError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| CryptoError::BadKey)?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Key::from_bytes(bytes))
    }

    pub(crate) fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&self.bytes).into())
    }
}

/// Where a value lives; bound into its ciphertext.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub tenant: &'a str,
    pub secret: &'a str,
    pub key: &'a str,
}

impl Place<'_> {
    /// NUL-separated: names and keys cannot hold NUL, so no two places share these bytes.
    fn associated_data(&self) -> Vec<u8> {
        format!("kl-secret\0{}\0{}\0{}", self.tenant, self.secret, self.key).into_bytes()
    }
}

/// A sealed value as stored: the key's id, and base64 of nonce then ciphertext (with tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub key_id: String,
    pub blob: String,
}

/// The keys a server holds: the first seals, all open (the others remain while a rotation
/// re-encrypts the values sealed under them).
#[derive(Debug, Clone)]
pub(crate) struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A ring whose first key is current. `keys` must not be empty.
    pub(crate) fn new(keys: Vec<Key>) -> Keyring {
        assert!(!keys.is_empty(), "a keyring holds at least one key");
        Keyring { keys }
    }

    pub(crate) fn current(&self) -> &Key {
        &self.keys[0]
    }

    pub(crate) fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub(crate) fn seal(&self, place: Place<'_>, plaintext: &[u8]) -> Sealed {
        let key = self.current();
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let aad = place.associated_data();
        let ciphertext = key
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message of this size");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        Sealed {
            key_id: key.id.clone(),
            blob: STANDARD.encode(blob),
        }
    }

    pub(crate) fn open(&self, place: Place<'_>, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        let blob = STANDARD
            .decode(&sealed.blob)
            .map_err(|_| CryptoError::Unauthentic)?;
        if blob.len() < NONCE_BYTES {
            return Err(CryptoError::Unauthentic);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce's length");
        let aad = place.associated_data();
        key.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACE: Place<'static> = Place {
        tenant: "acme",
        secret: "db",
        key: "PASSWORD",
    };

    #[test]
    fn a_sealed_value_opens_to_the_same_bytes() {
        let ring = Keyring::new(vec![Key::generate()]);
        let sealed = ring.seal(PLACE, b"hunter2");
        assert_eq!(sealed.key_id, ring.current().id());
        assert!(!sealed.blob.contains("hunter2"));
        assert_eq!(ring.open(PLACE, &sealed).unwrap(), b"hunter2");
    }

    #[test]
    fn each_seal_takes_a_fresh_nonce() {
        let ring = Keyring::new(vec![Key::generate()]);
        assert_ne!(ring.seal(PLACE, b"same").blob, ring.seal(PLACE, b"same").blob);
    }

    #[test]
    fn a_value_moved_to_another_place_does_not_open() {
        let ring = Keyring::new(vec![Key::generate()]);
        let sealed = ring.seal(PLACE, b"hunter2");
        for other in [
            Place {
                tenant: "globex",
                ..PLACE
            },
            Place {
                secret: "api",
                ..PLACE
            },
            Place { key: "USER", ..PLACE },
            // Separators matter: "a\0b" + "c" is not "a" + "b\0c".
            Place {
                tenant: "acme\0db",
                secret: "",
                ..PLACE
            },
        ] {
            assert!(
                matches!(ring.open(other, &sealed), Err(CryptoError::Unauthentic)),
                "{other:?}"
            );
        }
    }

    #[test]
    fn another_key_does_not_open_it() {
        let sealed = Keyring::new(vec![Key::generate()]).seal(PLACE, b"hunter2");
        let stranger = Keyring::new(vec![Key::generate()]);
        assert!(matches!(
            stranger.open(PLACE, &sealed),
            Err(CryptoError::UnknownKey(_))
        ));
        // Even under the right id, the wrong bytes fail authentication.
        let forged = Sealed {
            key_id: stranger.current().id().to_owned(),
            ..sealed
        };
        assert!(matches!(
            stranger.open(PLACE, &forged),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn any_altered_byte_fails_authentication() {
        let ring = Keyring::new(vec![Key::generate()]);
        let sealed = ring.seal(PLACE, b"hunter2");
        let raw = STANDARD.decode(&sealed.blob).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let tampered = Sealed {
                blob: STANDARD.encode(bad),
                ..sealed.clone()
            };
            assert!(
                matches!(ring.open(PLACE, &tampered), Err(CryptoError::Unauthentic)),
                "byte {i}"
            );
        }
        let short = Sealed {
            blob: STANDARD.encode([0u8; 5]),
            ..sealed
        };
        assert!(matches!(ring.open(PLACE, &short), Err(CryptoError::Unauthentic)));
    }

    #[test]
    fn an_older_key_of_the_ring_still_opens_what_it_sealed() {
        let old = Key::generate();
        let sealed = Keyring::new(vec![old.clone()]).seal(PLACE, b"v1");
        let rotated = Keyring::new(vec![Key::generate(), old]);
        assert_eq!(rotated.open(PLACE, &sealed).unwrap(), b"v1");
        assert_ne!(rotated.seal(PLACE, b"v1").key_id, sealed.key_id);
    }

    #[test]
    fn keys_round_trip_through_base64_and_keep_their_id() {
        let key = Key::generate();
        let again = Key::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.id(), key.id());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
        for bad in ["", "not base64!", &STANDARD.encode([1u8; 16])] {
            assert!(
                matches!(Key::from_base64(bad), Err(CryptoError::BadKey)),
                "{bad:?}"
            );
        }
    }
}
