//! The write path through the real Linux NFS client (../shared/nfs-vm), over
//! NFSv4.0 and NFSv3: large and small files land byte-exact with their catalog rows, a script
//! of namespace changes leaves the same tree as on a local disk, and a
//! SIGKILL in the middle of writes, creates and renames loses nothing that
//! was committed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::*;

/// (parent label or "" for top level, size, content path) by label.
fn catalog_files(db: &Path) -> HashMap<String, (String, i64, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT f.label, COALESCE(p.label, ''), f.file_size, json_extract(f.aliases_json, '$.path')
             FROM file_nodes f LEFT JOIN file_nodes p ON p.node_id = f.parent_id
             WHERE f.node_type = 'file'",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// [`SUM`] of the concatenation of `parts`, as the tool prints it.
fn checksum_stream<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(SUM)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect(SUM);
    let mut input = child.stdin.take().unwrap();
    for part in parts {
        input.write_all(part).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn sums_of(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (h, p) = l.split_once("  ")?;
            Some((p.trim_start_matches("./").to_string(), h.to_string()))
        })
        .collect()
}

/// Mount options of each NFS version (`nfs-vm.sh`): NFSv3 finds MOUNT on
/// the NFS port.
const V4: &[&str] = &[];
const V3: &[&str] = &["--vers", "3"];

#[test]
fn big_and_small_files_land_byte_exact_with_their_rows() {
    big_and_small_files(V4, 16);
}

#[test]
fn nfsv3_big_and_small_files_land_byte_exact_with_their_rows() {
    // The same 1 GiB as over NFSv4: past 512 MiB the kernel's WRITEs go to
    // disk direct, and the file is read back cold, over NFSv3's own
    // arguments and replies (about two minutes of emulated guest).
    big_and_small_files(V3, 16);
}

/// A file of `blocks` × 64 MiB (its second half written direct) and 200
/// small ones, through the mount of `vers`.
fn big_and_small_files(vers: &[&str], blocks: u64) {
    let big = blocks << 26;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users/w.sqlite");
    let storage = tmp.path().join("users/w.storage");
    // The big file's second half goes to disk with O_DIRECT, its first
    // half buffered (by default all of it goes direct; `serve` reads
    // ./tuning.toml).
    std::fs::write(
        tmp.path().join("tuning.toml"),
        format!(
            "[storage]\ndirect_writes = true\ndirect_after = {}\n",
            big / 2
        ),
    )
    .unwrap();
    let mut server = Server::start(tmp.path(), &db, &storage, 0);
    // The content comes from a 64 MiB random seed (/dev/urandom makes about
    // 4 MB/s in the emulated guest, the seed rotated by a different offset
    // in each 64 MiB block, so a chunk written to the wrong place changes
    // the sum), and each small file from its own slice of it. The seed is
    // written to the mount too: the host rebuilds the big file's content
    // from it (hashing 1 GiB costs the emulated guest about 25 s).
    let script = r#"
set -e
blocks=BLOCKS
head -c 67108864 /dev/urandom > /tmp/seed
cp /tmp/seed seed.bin
md5sum /tmp/seed | sed 's/ \/tmp\/seed$/ seed.bin/' > /tmp/sums
b=0
while [ $b -lt $blocks ]; do
  o=$((b * 4194319))
  tail -c +$((o + 1)) /tmp/seed
  head -c $o /tmp/seed
  b=$((b+1))
done > big.bin
dd if=big.bin of=/dev/null bs=1M count=1 2>/dev/null
mkdir ingest
i=0
while [ $i -lt 200 ]; do
  n=$(( (i * 7919 + 13) % 262144 ))
  dd if=/tmp/seed bs=4096 skip=$i count=64 2>/dev/null | head -c $n > ingest/clip_$i.bin
  i=$((i+1))
done
sync
cd ingest && md5sum clip_*.bin | sed 's/  /  ingest\//' >> /tmp/sums && cd ..
echo SUM-BEGIN; cat /tmp/sums; echo SUM-END
echo 3 > /proc/sys/vm/drop_caches
echo "READBACK $(dd if=big.bin bs=1M 2>/dev/null | md5sum | cut -d' ' -f1)"
"#
    .replace("BLOCKS", &blocks.to_string());
    let _vm = vm_lock();
    let vm = run_vm(server.port(), &script, vers);
    let stdout = String::from_utf8_lossy(&vm.stdout).into_owned();
    assert_eq!(
        vm.status.code(),
        Some(0),
        "guest failed:\n{stdout}\nserver log:\n{}",
        server.log()
    );
    let mut sums = sums_of(section(&stdout, "SUM-BEGIN", "SUM-END"));
    assert_eq!(sums.len(), 201, "{sums:?}");
    // Read back in 1 MiB reads (a player's, not md5sum's 4 KiB, which
    // the client turns into small READs that go through the server's
    // cache and its read-ahead) with the guest's cache dropped: from the
    // server, whose page cache does not hold the file (written direct, or
    // written back and dropped by write-behind), so the READs go to disk
    // directly.
    let readback = stdout
        .lines()
        .find_map(|l| l.strip_prefix("READBACK "))
        .unwrap_or_else(|| panic!("no read-back sum in:\n{stdout}"));
    // A graceful stop flushes the catalog writer.
    server.terminate();
    let files = catalog_files(&db);
    // What big.bin must hold, rebuilt from the seed the guest wrote (its
    // own sum checked below with the others).
    let seed = std::fs::read(&files["seed.bin"].2).unwrap();
    assert_eq!(seed.len(), 64 << 20);
    let expected = checksum_stream((0..blocks as usize).flat_map(|b| {
        let o = b * 4_194_319;
        [&seed[o..], &seed[..o]]
    }));
    sums.insert("big.bin".to_string(), expected);
    assert_eq!(readback.trim(), sums["big.bin"], "big.bin read back");
    for (guest, sum) in &sums {
        let (parent, label) = guest.rsplit_once('/').unwrap_or(("", guest));
        let (p, size, path) = files
            .get(label)
            .unwrap_or_else(|| panic!("{label} missing from the catalog"));
        assert_eq!(p, parent, "parent of {label}");
        let disk = std::fs::metadata(path).unwrap().len();
        assert_eq!(*size as u64, disk, "catalog size of {label}");
        assert_eq!(&checksum_file(Path::new(path)), sum, "content of {label}");
    }
    assert_eq!(files["big.bin"].1 as u64, big);
    if cfg!(target_os = "linux") {
        // The kernel client's 1 MiB WRITEs took the zero-copy route
        // (socket -> pipe -> file), those past 512 MiB on to O_DIRECT; the
        // byte-exact sums above cover both.
        let log = server.log();
        let counts: Vec<u64> = log
            .lines()
            .find_map(|l| l.strip_prefix("WRITE payloads spliced: "))
            .map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .filter(|n| !n.is_empty())
                    .take(2)
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [spliced, direct] = counts[..] else {
            panic!("no splice counts in the server log:\n{log}");
        };
        let mib = big >> 20;
        assert!(
            spliced >= mib / 2,
            "only {spliced} WRITE payloads were spliced"
        );
        assert!(
            direct >= mib / 8,
            "only {direct} WRITE payloads went to disk with O_DIRECT"
        );
        if markbase_nfs::storage::direct_reads_supported() {
            let direct_reads: u64 = log
                .lines()
                .find_map(|l| l.strip_prefix("READs of cold data served with O_DIRECT: "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no direct-read count in the server log:\n{log}"));
            // At least the half written direct, in READs of 1 MiB or less.
            assert!(
                direct_reads >= mib / 2,
                "only {direct_reads} READs of the cold file went direct"
            );
        }
    }
}

/// The same shell script on the mount and on the guest's local tmpfs must
/// leave the same tree.
#[test]
fn namespace_script_matches_a_local_filesystem() {
    namespace_script(V4);
}

#[test]
fn nfsv3_namespace_script_matches_a_local_filesystem() {
    namespace_script(V3);
}

fn namespace_script(vers: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users/s.sqlite");
    let server = Server::start(tmp.path(), &db, &tmp.path().join("users/s.storage"), 0);
    let script = r#"
work() {
  mkdir -p "$1" && cd "$1" || exit 1
  mkdir -p a/b/c "Scène 1" empty gone
  yes 'frame' | head -c 300000 > a/b/clip.mov
  echo hello > a/note.txt
  echo 'more text' >> a/note.txt
  head -c 5000 /dev/zero > a/b/c/zero.bin
  truncate -s 1000 a/b/clip.mov
  truncate -s 70000 a/b/c/zero.bin
  mv a/note.txt a/renamed.txt
  mv a/renamed.txt "Scène 1/moved.txt"
  echo old > "Scène 1/target.txt"
  mv "Scène 1/moved.txt" "Scène 1/target.txt"
  mv a/b/c a/c2
  mv gone/ a/gone2
  rmdir a/gone2
  echo bye > a/tmp && rm a/tmp
  touch ._AppleDouble .DS_Store
  printf 'abc' > "a/b/with space.txt"
  cp a/b/clip.mov a/c2/copy.mov
  echo appended >> a/c2/copy.mov
  ln -s b/clip.mov a/link || exit 2
  ln -s "../a/b" "Scène 1/dirlink" || exit 2
  cat "Scène 1/dirlink/with space.txt" > a/through-link.txt || exit 2
  mv a/link a/link2 || exit 2
  ln -s gone a/dangling && rm a/dangling || exit 2
  mkfifo a/pipe || exit 2
  mknod a/null c 1 3 || exit 2
  mknod a/disk b 8 1 || exit 2
  mv a/disk a/c2/disk || exit 2
  rm a/null || exit 2
  cd /
}
work /mnt/tree
work /tmp/local
echo NFS-BEGIN; cd /mnt/tree && /usr/bin/find . -printf '%y %s %p %l\n' | sort; echo NFS-END
echo NFSSUM-BEGIN; /usr/bin/find . -type f -exec md5sum {} + | sort -k2; echo NFSSUM-END
echo LOCAL-BEGIN; cd /tmp/local && /usr/bin/find . -printf '%y %s %p %l\n' | sort; echo LOCAL-END
echo LOCALSUM-BEGIN; /usr/bin/find . -type f -exec md5sum {} + | sort -k2; echo LOCALSUM-END
echo RDEV-BEGIN; for t in /mnt/tree /tmp/local; do ls -l $t/a/c2/disk | awk '{print $5 $6}'; done; echo RDEV-END
"#;
    let _vm = vm_lock();
    let vm = run_vm(server.port(), script, vers);
    let stdout = String::from_utf8_lossy(&vm.stdout).into_owned();
    assert_eq!(
        vm.status.code(),
        Some(0),
        "guest failed:\n{stdout}\nserver log:\n{}",
        server.log()
    );
    // Folder sizes differ by filesystem; compare types and file sizes.
    let norm = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| {
                let mut p = l.splitn(3, ' ');
                let (t, size, path) =
                    (p.next().unwrap(), p.next().unwrap(), p.next().unwrap_or(""));
                if t == "d" {
                    format!("d {path}")
                } else {
                    format!("{t} {size} {path}")
                }
            })
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect()
    };
    let nfs = norm(section(&stdout, "NFS-BEGIN", "NFS-END"));
    let local = norm(section(&stdout, "LOCAL-BEGIN", "LOCAL-END"));
    assert!(nfs.len() > 10, "{nfs:?}");
    // Symlinks (their targets), a FIFO and a device made through the
    // mount are there as the local file system has them.
    for want in [
        "l 10 ./a/link2 b/clip.mov",
        "l 6 ./Scène 1/dirlink ../a/b",
        "p 0 ./a/pipe ",
        "b 0 ./a/c2/disk ",
        "f 3 ./a/through-link.txt ",
    ] {
        assert!(
            nfs.iter().any(|l| l == want),
            "{want:?} missing from {nfs:#?}"
        );
    }
    assert_eq!(nfs, local);
    assert_eq!(
        section(&stdout, "RDEV-BEGIN", "RDEV-END").trim(),
        "8,1\n8,1"
    );
    assert_eq!(
        section(&stdout, "NFSSUM-BEGIN", "NFSSUM-END"),
        section(&stdout, "LOCALSUM-BEGIN", "LOCALSUM-END")
    );
}

/// SIGKILL in the middle of a stream of writes, creates and renames: after
/// restart every fsync'ed byte and every rename the guest saw complete is
/// there, the catalog's sizes equal the disk's, and the mount carries on.
#[test]
fn sigkill_mid_stream_loses_nothing_committed() {
    sigkill_mid_stream(V4);
}

#[test]
fn nfsv3_sigkill_mid_stream_loses_nothing_committed() {
    sigkill_mid_stream(V3);
}

fn sigkill_mid_stream(vers: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users/c.sqlite");
    let storage = tmp.path().join("users/c.storage");
    let mut server = Server::start(tmp.path(), &db, &storage, 0);
    // Sources are made first, so the writes to the mount form one stream
    // that the kill interrupts.
    let script = r#"
mkdir -p crash
head -c 4194304 /dev/urandom > /tmp/seed
i=0
while [ $i -lt 24 ]; do
  dd if=/tmp/seed bs=4096 skip=$i 2>/dev/null | head -c $(( 2097152 + i * 40000 )) > /tmp/src$i
  i=$((i+1))
done
i=0
while [ $i -lt 24 ]; do
  if dd if=/tmp/src$i of=crash/part$i bs=256k conv=fsync 2>/dev/null &&
     mv crash/part$i crash/file$i; then
    echo "DONE $i $(md5sum < /tmp/src$i | cut -d' ' -f1)"
  else
    echo "FAILED $i"
  fi
  i=$((i+1))
done
echo LIST-BEGIN; ls crash; echo LIST-END
"#;
    let _vm = vm_lock();
    let mut killed = false;
    let port = server.port();
    let (code, lines) = run_vm_streaming_with(port, vers, script, |line| {
        if line.starts_with("DONE 4 ") && !killed {
            server.kill();
            killed = true;
            server.start_again();
        }
    });
    let stdout = lines.join("\n");
    eprintln!("guest output:\n{stdout}");
    assert!(killed, "never reached the kill point:\n{stdout}");
    assert_eq!(
        code,
        Some(0),
        "guest failed:\n{stdout}\nserver log:\n{}",
        server.log()
    );
    let done: BTreeMap<String, String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("DONE "))
        .map(|l| {
            let (i, h) = l.split_once(' ').unwrap();
            (format!("file{i}"), h.to_string())
        })
        .collect();
    // The mount carried on after the crash: most of the later files made it.
    assert!(
        done.len() >= 20,
        "too few completed after the restart:\n{stdout}"
    );
    // Crash again, with no chance to flush, then look at what survived.
    server.kill();
    server.start_again();
    server.terminate();
    let files = catalog_files(&db);
    for (label, sum) in &done {
        let (parent, size, path) = files
            .get(label)
            .unwrap_or_else(|| panic!("{label} (renamed before the crash) is missing\n{stdout}"));
        assert_eq!(parent, "crash");
        let disk = std::fs::metadata(path).unwrap().len();
        assert_eq!(*size as u64, disk, "catalog size of {label} vs disk");
        assert_eq!(&checksum_file(Path::new(path)), sum, "content of {label}");
    }
    // Every catalog size equals its content file's.
    for (label, (_, size, path)) in &files {
        if let Ok(m) = std::fs::metadata(path) {
            assert_eq!(*size as u64, m.len(), "catalog size of {label}");
        }
    }
}
