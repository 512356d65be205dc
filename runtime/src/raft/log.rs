//! The Raft log and vote, in this enclave's memory.
//!
//! Nothing here survives the process, on purpose: an enclave has no disk
//! the host could not roll back. That is safe because a node id is never
//! reused (64 random bits per process): a restarted enclave is a new node
//! that joins as a learner and catches up from a snapshot, so no id ever
//! votes twice in one term or forgets an entry it acknowledged. Losing a
//! majority at once loses what the last sealed snapshot did not hold
//! (`docs/persistence.md`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};

use super::types::{NodeId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

#[derive(Default)]
struct Inner {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

/// The log store: cheap to clone, every clone the same log.
#[derive(Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryLog {
    // openraft's StorageError is what its traits return; boxing it here
    // would only be unboxed again at every call.
    #[allow(clippy::result_large_err)]
    fn lock(&self) -> StorageResult<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| {
            StorageIOError::read_logs(&std::io::Error::other("the log's lock is poisoned")).into()
        })
    }
}

impl RaftLogReader<TypeConfig> for MemoryLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let g = self.lock()?;
        Ok(g.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemoryLog {
    type LogReader = MemoryLog;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let g = self.lock()?;
        let last = g
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(g.purged);
        Ok(LogState {
            last_purged_log_id: g.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> MemoryLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.lock()?.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.lock()?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.lock()?.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.lock()?.committed)
    }

    async fn append<I>(&mut self, entries: I, done: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        {
            let mut g = self.lock()?;
            for e in entries {
                g.entries.insert(e.log_id.index, e);
            }
        }
        // Memory is as durable as this log gets: "flushed" at once.
        done.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, from: LogId<NodeId>) -> StorageResult<()> {
        self.lock()?.entries.split_off(&from.index);
        Ok(())
    }

    async fn purge(&mut self, upto: LogId<NodeId>) -> StorageResult<()> {
        let mut g = self.lock()?;
        g.purged = Some(upto);
        let kept = g.entries.split_off(&(upto.index + 1));
        g.entries = kept;
        Ok(())
    }
}
