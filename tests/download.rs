//! The corpus download (`switch_moe::data::download_verified`) against a server on loopback that
//! this test runs itself, serving bytes the test makes: a good file is written whole, a wrong
//! checksum is refused and leaves nothing behind, a cached file that matches is not downloaded
//! again, and an unreachable server gives an error that names the way out (a local copy).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use common::*;
use switch_moe::data::download_verified;

/// The sha256 of `bytes` (its known answers are checked by the first test).
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves `body` with status 200 to `connections` requests on a fresh loopback port; returns
/// the URL of the file.
fn serve(body: Vec<u8>, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            // Read the request head (up to the blank line) before answering.
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}/corpus.txt")
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_checksum_reference_is_sha256() {
    // Known answers (FIPS 180-2 examples), so the comparisons below rest on a checked digest.
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn a_download_with_the_right_checksum_is_written_whole() {
    let dir = scratch_in("download", "good");
    let body = play_text(5_000, 3).into_bytes();
    let sha = sha256_hex(&body);
    let url = serve(body.clone(), 1);
    let dest = dir.join("cache").join("corpus.txt");
    download_verified(&url, &dest, &sha).expect("the download succeeds");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(
        leftovers(&dir.join("cache")),
        ["corpus.txt"],
        "no partial file"
    );

    // Cached and intact: not downloaded again (nothing listens on the URL any more).
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "http://127.0.0.1:{}/corpus.txt",
            l.local_addr().unwrap().port()
        )
    };
    download_verified(&closed, &dest, &sha).expect("the cached copy is used");
}

#[test]
fn a_wrong_checksum_is_refused_and_leaves_nothing() {
    let dir = scratch_in("download", "bad");
    let body = play_text(5_000, 4).into_bytes();
    let url = serve(body, 1);
    let dest = dir.join("corpus.txt");
    let expected = sha256_hex(b"another file");
    let err = download_verified(&url, &dest, &expected)
        .expect_err("a file with another checksum must be refused")
        .to_string();
    assert!(
        err.contains("sha256") && err.contains(&expected),
        "the error names the checksums: {err}"
    );
    assert!(err.contains("SWITCH_MOE_DATA"), "{err}");
    assert!(
        leftovers(&dir).is_empty(),
        "nothing written: {:?}",
        leftovers(&dir)
    );
}

#[test]
fn an_unreachable_server_says_how_to_work_offline() {
    let dir = scratch_in("download", "offline");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "http://127.0.0.1:{}/corpus.txt",
            l.local_addr().unwrap().port()
        )
    };
    let err = download_verified(&closed, &dir.join("corpus.txt"), &sha256_hex(b"x"))
        .expect_err("nothing listens")
        .to_string();
    assert!(err.contains("cannot download"), "{err}");
    assert!(err.contains("SWITCH_MOE_DATA"), "{err}");
    assert!(leftovers(&dir).is_empty());
}
