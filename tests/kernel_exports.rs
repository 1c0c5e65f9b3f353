//! Several users' catalogs from one server (`serve --users DIR`), through
//! the real Linux NFSv4 client (../shared/nfs-vm): `/warren` and
//! `/accusys` mounted side by side each show their own user's tree and
//! nothing of the other's, and a mount of `/` shows the pseudo-root with
//! both, which the kernel crosses into by itself.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn the_kernel_client_mounts_two_users_exports_each_with_its_own_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    std::fs::create_dir_all(&users).unwrap();
    // Two different trees: the demo one, and a generated one.
    let warren = users.join("warren.sqlite");
    markbase_nfs::catalog::create_demo(&warren, &users.join("warren.storage")).unwrap();
    let accusys = users.join("accusys.sqlite");
    markbase_nfs::catalog::generate(
        &accusys,
        &users.join("accusys.storage"),
        &markbase_nfs::catalog::GenOptions {
            nodes: 300,
            media_sizes: vec![],
            ..Default::default()
        },
    )
    .unwrap();
    let want_warren = expected_tree(&warren);
    let want_accusys = expected_tree(&accusys);
    assert_ne!(want_warren, want_accusys);

    let port = free_port_below_ephemeral();
    let users_arg = users.display().to_string();
    let server = Server::spawn(
        tmp.path(),
        [
            "serve",
            "--address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--users",
            &users_arg,
            "--grace-time",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    let ls = "/usr/bin/ls -lRA --show-control-chars --time-style=+%s --quoting-style=literal";
    // /mnt is /warren (nfs-vm's own mount); the guest mounts /accusys and
    // the pseudo-root beside it with the same options.
    let script = format!(
        r#"set -e
O="vers=4.0,proto=tcp,port=$NFSVM_PORT,addr=10.0.2.2,clientaddr=127.0.0.1"
mkdir -p /m/accusys /m/all
nfsmnt 10.0.2.2:/accusys /m/accusys nfs4 "$O"
nfsmnt 10.0.2.2:/ /m/all nfs4 "$O"
echo W-BEGIN; cd /mnt; {ls}; echo W-END
echo A-BEGIN; cd /m/accusys; {ls}; echo A-END
echo ROOT-BEGIN; /usr/bin/ls -1 /m/all; echo ROOT-END
echo "CROSSED $(/usr/bin/ls -1 /m/all/warren | tr '\n' ' ')"
echo "only warren's" > /mnt/cut.txt
echo "THROUGH-ROOT $(cat /m/all/warren/cut.txt)"
if [ -e /m/accusys/cut.txt ] || [ -e /m/all/accusys/cut.txt ]; then echo LEAKED; fi
cd /
umount /m/accusys
umount -l /m/all || true
echo DONE
"#
    );
    let _vm = vm_lock();
    let out = run_vm(port, &script, &["--export", "/warren"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", server.log());
    assert!(stdout.contains("DONE"), "{stdout}");

    assert_same_tree(
        &parse_ls_lr(section(&stdout, "W-BEGIN", "W-END")),
        &want_warren,
    );
    assert_same_tree(
        &parse_ls_lr(section(&stdout, "A-BEGIN", "A-END")),
        &want_accusys,
    );
    let root: Vec<&str> = section(&stdout, "ROOT-BEGIN", "ROOT-END").lines().collect();
    assert_eq!(root, ["accusys", "warren"]);
    assert!(
        stdout.contains("CROSSED Library Projects"),
        "the pseudo-root's warren is warren's root: {stdout}"
    );
    assert!(stdout.contains("THROUGH-ROOT only warren's"), "{stdout}");
    assert!(!stdout.contains("LEAKED"), "{stdout}");
    // The file the guest wrote is in warren's catalog, not in accusys's.
    assert!(wait_until(Duration::from_secs(5), || {
        expected_tree(&warren).contains_key("./cut.txt")
    }));
    assert!(!expected_tree(&accusys).contains_key("./cut.txt"));
}
