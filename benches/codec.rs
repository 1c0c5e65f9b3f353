//! Micro-benchmarks of the hot paths that do not touch the network:
//! a metadata COMPOUND through the dispatcher, encoding GETATTR attributes,
//! and a catalog lookup served from the cache.

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use markbase_nfs::catalog::NodeId;
use markbase_nfs::config::Config;
use markbase_nfs::nfs4::attrs::supported;
use markbase_nfs::nfs4::consts::attr;
use markbase_nfs::rpc::message::encode_call;
use markbase_nfs::rpc::{Credentials, Outcome};
use markbase_nfs::serve::{dispatcher_for, open_export};
use markbase_nfs::tools::client::CompoundArgs;
use markbase_nfs::xdr::Encoder;

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::default();
    cfg.export.db = tmp.path().join("demo.sqlite");
    let nfs = open_export(&cfg).expect("open demo export");
    let dispatcher = dispatcher_for(nfs.clone());

    let args = CompoundArgs::new()
        .putrootfh()
        .lookup("Projects")
        .lookup("README.txt")
        .getattr(&[
            attr::TYPE,
            attr::CHANGE,
            attr::SIZE,
            attr::FILEID,
            attr::MODE,
            attr::TIME_MODIFY,
        ]);
    let mut call = Encoder::new();
    encode_call(&mut call, 1, 100_003, 4, 1, &Credentials::None);
    call.buf.extend_from_slice(&args.encode("bench", 0));
    c.bench_function("compound_lookup_getattr", |b| {
        b.iter(|| match dispatcher.dispatch(black_box(&call.buf), None) {
            Outcome::Reply(r) => black_box(r.len()),
            other => panic!("unexpected {other:?}"),
        })
    });

    let projects = nfs
        .catalog()
        .lookup(&NodeId::Root, "Projects")
        .expect("lookup")
        .expect("Projects exists");
    let readme = nfs
        .catalog()
        .lookup(&projects.id, "README.txt")
        .expect("lookup")
        .expect("README exists");
    let all = supported();
    let mac = markbase_nfs::nfs4::attrs::Viewer { uid: 501, gid: 20 };
    let mut out = Encoder::new();
    c.bench_function("encode_all_attributes", |b| {
        b.iter(|| {
            out.buf.clear();
            nfs.encode_attributes(black_box(&readme), mac, &all, &mut out)
                .expect("encode");
            black_box(out.buf.len())
        })
    });

    let catalog = nfs.catalog();
    c.bench_function("catalog_lookup_cached", |b| {
        b.iter(|| {
            black_box(
                catalog
                    .lookup(&projects.id, black_box("README.txt"))
                    .expect("lookup"),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
