//! The WXBizMsgCrypt envelope shared by the WeCom intelligent robot, the WeCom self-built
//! app and the WeChat Official Account in safe mode: the SHA-1 signature over the sorted
//! token/timestamp/nonce/encrypt values, and AES-256-CBC with the key derived from the
//! `EncodingAESKey`, IV = the first 16 key bytes, PKCS#7 padding to **32**-byte blocks, over
//! `random(16) ‖ msg_len(4, big endian) ‖ msg ‖ receive_id`.
//!
//! Hand-written because no maintained crate implements it; the 32-byte padding block is the
//! reason stock PKCS#7 unpadders cannot be used (they reject pad values 17..=32).

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rand::RngCore;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The platform's padding block; not the AES block size.
const PAD_BLOCK: usize = 32;
const RANDOM_LEN: usize = 16;
const LEN_PREFIX: usize = 4;
/// Length of an `EncodingAESKey` as the consoles issue it.
const ENCODING_KEY_LEN: usize = 43;

/// Tencent's samples decode with lenient decoders (trailing bits set in the last character
/// are ignored; the 43-character key always has them), so decoding must be as lenient.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const CANONICAL: GeneralPurpose = base64::engine::general_purpose::STANDARD;

type Encryptor = cbc::Encryptor<Aes256>;
type Decryptor = cbc::Decryptor<Aes256>;

/// Why an envelope was refused. Only [`CryptoError::Signature`] is an authentication
/// failure; after a valid signature, the others mean a key mismatch or a broken sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the EncodingAESKey must be the 43 letters and digits shown in the platform console")]
    Key,
    #[error("the signature does not match; check the token configured for this account")]
    Signature,
    #[error("the encrypted payload is not valid base64")]
    Base64,
    #[error("the encrypted payload is not a whole number of AES blocks")]
    BlockLength,
    #[error("the decrypted payload has invalid padding; check the EncodingAESKey")]
    Padding,
    #[error("the decrypted payload is shorter than its declared length")]
    Truncated,
    #[error("the message was encrypted for another receiver (corp id / app id mismatch)")]
    ReceiveId,
    #[error("the decrypted message is not UTF-8")]
    Utf8,
}

/// SHA-1 over the values sorted bytewise and joined without separator, lowercase hex: the
/// signature of both the encrypted (`msg_signature`) and the plain (`signature`) schemes.
pub fn sorted_sha1(values: &[&str]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for value in sorted {
        hasher.update(value.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Compares a received hex signature with the expected one in constant time. Case is
/// folded first: the platforms send lowercase, but hex case carries no meaning.
pub fn verify_sorted_sha1(values: &[&str], received: &str) -> Result<(), CryptoError> {
    let expected = sorted_sha1(values);
    let received = received.trim().to_ascii_lowercase();
    if bool::from(expected.as_bytes().ct_eq(received.as_bytes())) {
        Ok(())
    } else {
        Err(CryptoError::Signature)
    }
}

/// One account's envelope: token, AES key and the receive id it expects (corp id for a
/// WeCom app, `""` for the intelligent robot, app id for an Official Account).
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: [u8; 32],
    receive_id: String,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Token and key are secrets: never in logs.
        f.debug_struct("MsgCrypt")
            .field("receive_id", &self.receive_id)
            .finish_non_exhaustive()
    }
}

impl MsgCrypt {
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            token: token.to_string(),
            key: aes_key(encoding_aes_key)?,
            receive_id: receive_id.to_string(),
        })
    }

    /// `msg_signature` of an encrypted payload.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        sorted_sha1(&[&self.token, timestamp, nonce, encrypt])
    }

    /// Checks `msg_signature` before anything is decrypted.
    pub fn verify(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptoError> {
        verify_sorted_sha1(&[&self.token, timestamp, nonce, encrypt], msg_signature)
    }

    /// Verifies the signature, then decrypts: the order the platform requires and the only
    /// entry point the handlers use.
    pub fn open(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<String, CryptoError> {
        self.verify(msg_signature, timestamp, nonce, encrypt)?;
        self.decrypt(encrypt)
    }

    /// Decrypts a base64 payload and checks its receive id in constant time.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let mut buffer = LENIENT
            .decode(encrypt.trim())
            .map_err(|_| CryptoError::Base64)?;
        if buffer.is_empty() || buffer.len() % 16 != 0 {
            return Err(CryptoError::BlockLength);
        }
        let plain = Decryptor::new(&self.key.into(), &self.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut buffer)
            .map_err(|_| CryptoError::BlockLength)?;
        let unpadded = unpad(plain)?;
        let (msg, receive_id) = split_frame(unpadded)?;
        if !bool::from(receive_id.ct_eq(self.receive_id.as_bytes())) {
            return Err(CryptoError::ReceiveId);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::Utf8)
    }

    /// Encrypts with a fresh random prefix.
    pub fn encrypt(&self, msg: &str) -> String {
        let mut random = [0u8; RANDOM_LEN];
        rand::rng().fill_bytes(&mut random);
        self.encrypt_with_random(msg, &random)
    }

    /// Encrypts with the given 16-byte prefix; deterministic, which the vectors need.
    pub fn encrypt_with_random(&self, msg: &str, random: &[u8; RANDOM_LEN]) -> String {
        let msg = msg.as_bytes();
        let receive_id = self.receive_id.as_bytes();
        let body_len = RANDOM_LEN + LEN_PREFIX + msg.len() + receive_id.len();
        let pad = PAD_BLOCK - body_len % PAD_BLOCK;
        let mut buffer = Vec::with_capacity(body_len + pad);
        buffer.extend_from_slice(random);
        // Messages are bounded far below 4 GiB by every caller; saturate rather than wrap.
        let declared = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        buffer.extend_from_slice(&declared.to_be_bytes());
        buffer.extend_from_slice(msg);
        buffer.extend_from_slice(receive_id);
        // `pad` is in 1..=32, so the conversion always succeeds.
        let pad_byte = u8::try_from(pad).unwrap_or(u8::MAX);
        buffer.resize(body_len + pad, pad_byte);
        let total = buffer.len();
        let ciphertext = Encryptor::new(&self.key.into(), &self.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut buffer, total)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        CANONICAL.encode(ciphertext)
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }
}

/// `base64(EncodingAESKey + "=")`, which must give exactly 32 bytes.
pub fn aes_key(encoding_aes_key: &str) -> Result<[u8; 32], CryptoError> {
    let encoding = encoding_aes_key.trim();
    if encoding.len() != ENCODING_KEY_LEN || !encoding.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CryptoError::Key);
    }
    let decoded = LENIENT
        .decode(format!("{encoding}="))
        .map_err(|_| CryptoError::Key)?;
    decoded.try_into().map_err(|_| CryptoError::Key)
}

/// PKCS#7 with a 32-byte block: the pad value is 1..=32 and every pad byte carries it.
fn unpad(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let Some(&last) = plain.last() else {
        return Err(CryptoError::Padding);
    };
    let pad = usize::from(last);
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(CryptoError::Padding);
    }
    let (body, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&byte| byte != last) {
        return Err(CryptoError::Padding);
    }
    Ok(body)
}

/// Splits `random ‖ len ‖ msg ‖ receive_id` into `(msg, receive_id)`.
fn split_frame(frame: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let rest = frame.get(RANDOM_LEN..).ok_or(CryptoError::Truncated)?;
    let (len, rest) = rest
        .split_first_chunk::<LEN_PREFIX>()
        .ok_or(CryptoError::Truncated)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| CryptoError::Truncated)?;
    if len > rest.len() {
        return Err(CryptoError::Truncated);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
