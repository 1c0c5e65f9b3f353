//! What the NFSv4 state keeps across restarts in the catalog: the clients
//! that held state (they may reclaim it in the grace period) and the boot
//! instances of earlier runs (their stateids answer STALE, not BAD). Part
//! of [`Catalog`].

use super::*;

impl Catalog {
    /// NFS clients recorded as holding state (by their client id string).
    pub fn nfs_clients(&self) -> CatalogResult<Vec<Vec<u8>>> {
        let conn = self.conn.lock();
        self.statements.fetch_add(1, Ordering::Relaxed);
        let mut st = conn
            .prepare("SELECT client_id FROM markbase_nfs_clients")
            .map_err(sql_err("list NFS clients"))?;
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(sql_err("list NFS clients"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err("list NFS clients"));
        rows
    }

    /// Records this run's boot instance (committed before it returns) and
    /// returns those of earlier runs, the newest [`BOOTS_KEPT`].
    pub fn record_boot(&self, boot: u32) -> CatalogResult<std::collections::HashSet<u32>> {
        let conn = self.conn.lock();
        self.statements.fetch_add(3, Ordering::Relaxed);
        let earlier = conn
            .prepare_cached("SELECT boot FROM markbase_nfs_boots")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, i64>(0))?
                    .map(|b| b.map(|b| b as u32))
                    .collect::<Result<std::collections::HashSet<u32>, _>>()
            })
            .map_err(sql_err("read earlier boot instances"))?;
        conn.execute(
            "INSERT OR REPLACE INTO markbase_nfs_boots (boot, started_ns) VALUES (?1, ?2)",
            params![boot as i64, now_ns()],
        )
        .and_then(|_| {
            conn.execute(
                "DELETE FROM markbase_nfs_boots WHERE boot NOT IN
                 (SELECT boot FROM markbase_nfs_boots ORDER BY started_ns DESC LIMIT ?1)",
                [BOOTS_KEPT],
            )
        })
        .map_err(sql_err("record the boot instance"))?;
        Ok(earlier)
    }

    /// Records a confirmed NFS client; committed before it returns, since
    /// a client must be able to reclaim after any restart that follows.
    pub fn record_nfs_client(&self, id: &[u8]) -> Pending {
        Pending(
            self.writer
                .submit(vec![Change::ClientUp(id.to_vec())], vec![]),
        )
    }

    /// Forgets NFS clients (their leases expired); not waited for.
    pub fn forget_nfs_clients(&self, ids: Vec<Vec<u8>>) {
        if ids.is_empty() {
            return;
        }
        let changes = ids.into_iter().map(Change::ClientDown).collect();
        drop(self.writer.submit(changes, vec![]));
    }
}
