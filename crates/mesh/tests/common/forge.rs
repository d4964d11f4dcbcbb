//! A forged WireGuard handshake initiation, built by hand from the Noise IK steps (boringtun will
//! only encrypt its own static key). It claims any static key the caller names and carries a valid
//! mac1 for the target, which anyone can compute from the target's public key; its timestamp is
//! sealed with a key only the claimed peer could derive, so it is garbage.

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use boringtun::x25519::{PublicKey as XPublic, StaticSecret};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::ChaCha20Poly1305;

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// HMAC-BLAKE2s (RFC 2104 over a 64-byte block).
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = vec![ipad.as_slice()];
    inner.extend_from_slice(parts);
    let inner = hash(&inner);
    hash(&[&opad, &inner])
}

/// Noise KDF2: a new chaining key and a key.
fn kdf2(chaining: &[u8; 32], input: &[u8]) -> ([u8; 32], [u8; 32]) {
    let t0 = hmac(chaining, &[input]);
    let t1 = hmac(&t0, &[&[1]]);
    let t2 = hmac(&t0, &[&t1, &[2]]);
    (t1, t2)
}

fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    let tag = ChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(&[0u8; 12].into(), aad, &mut buf)
        .expect("seal");
    buf.extend_from_slice(&tag);
    buf
}

/// A 148-byte initiation to `target` that claims to come from `claimed`, sender index `sender`.
pub fn initiation_claiming(target: &[u8; 32], claimed: &[u8; 32], sender: u32) -> Vec<u8> {
    let target_pub = XPublic::from(*target);
    let ephemeral = StaticSecret::random_from_rng(rand_core::OsRng);
    let e_pub = XPublic::from(&ephemeral);
    let mut chaining = hash(&[CONSTRUCTION]);
    let mut h = hash(&[&hash(&[&chaining, IDENTIFIER]), target]);
    chaining = hmac(&hmac(&chaining, &[e_pub.as_bytes()]), &[&[1]]);
    h = hash(&[&h, e_pub.as_bytes()]);
    let (c, key) = kdf2(&chaining, ephemeral.diffie_hellman(&target_pub).as_bytes());
    chaining = c;
    let enc_static = seal(&key, &h, claimed);
    h = hash(&[&h, &enc_static]);
    // the real key is KDF2(chaining, DH(claimed_private, target)): out of the forger's reach
    let _ = chaining;
    let enc_time = seal(&[0x5a; 32], &h, &[0u8; 12]);
    let mut msg = vec![1, 0, 0, 0];
    msg.extend_from_slice(&sender.to_le_bytes());
    msg.extend_from_slice(e_pub.as_bytes());
    msg.extend_from_slice(&enc_static);
    msg.extend_from_slice(&enc_time);
    let mac1_key = hash(&[b"mac1----", target]);
    let mut mac = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(&mac1_key)
        .expect("16-byte mac");
    mac.update(&msg);
    let mac1: [u8; 16] = mac.finalize_fixed().into();
    msg.extend_from_slice(&mac1);
    msg.extend_from_slice(&[0u8; 16]);
    assert_eq!(msg.len(), 148);
    msg
}
