//! Keys are interchangeable with the ones `wg genkey`, `wg pubkey` and `wg genpsk` print.

use std::io::Write;
use std::process::{Command, Stdio};

use vantage_mesh::{PresharedKey, PrivateKey, PublicKey};

fn wg(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("`wg` (wireguard-tools) must be installed; .ci/run installs it");
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "wg {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn keys_round_trip_with_wg() {
    for _ in 0..5 {
        let private = wg(&["genkey"], None);
        let public = wg(&["pubkey"], Some(&private));
        let ours: PrivateKey = private.parse().unwrap();
        assert_eq!(ours.to_base64(), private);
        assert_eq!(ours.public_key().to_base64(), public);
        let parsed: PublicKey = public.parse().unwrap();
        assert_eq!(parsed, ours.public_key());
        let psk = wg(&["genpsk"], None);
        assert_eq!(psk.parse::<PresharedKey>().unwrap().to_base64(), psk);
    }
    // and the other way: wg derives the same public key from a key we generated
    let ours = PrivateKey::generate(&mut rand_core::OsRng);
    assert_eq!(
        wg(&["pubkey"], Some(&ours.to_base64())),
        ours.public_key().to_base64()
    );
}
