//! Group commit: many threads' small durable writes share one commit (one fsync), in the
//! leader/follower style of databases' group commit. Nobody returns before the commit that
//! holds its item is durable, so the listener still answers `250` only after fsync.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use super::QueueError;

/// Commits a batch of items, returning one outcome per item, in order.
pub(super) type Commit<'a, T, R> = dyn Fn(&[T]) -> Result<Vec<R>, QueueError> + 'a;

const MISCOUNTED: &str = "a group commit returned a different number of outcomes than items";

/// Items waiting for a commit, and the outcome of finished ones.
struct State<T, R> {
    waiting: Vec<(u64, T)>,
    committing: bool,
    next_ticket: u64,
    done: HashMap<u64, Result<R, Arc<QueueError>>>,
}

/// A group committer for items of type `T`, each committed with an outcome `R`; see the
/// module documentation.
pub(super) struct GroupCommit<T, R = ()> {
    state: Mutex<State<T, R>>,
    finished: Condvar,
}

impl<T, R> GroupCommit<T, R> {
    pub(super) fn new() -> Self {
        GroupCommit {
            state: Mutex::new(State {
                waiting: Vec::new(),
                committing: false,
                next_ticket: 0,
                done: HashMap::new(),
            }),
            finished: Condvar::new(),
        }
    }

    /// Commits `item` together with whatever other threads submit meanwhile: the first
    /// caller to find no commit running becomes the leader and runs `commit` on every item
    /// waiting (it returns one outcome per item, in order); the others wait for its outcome.
    /// A batch that fails is retried item by item, so that one bad item does not fail the
    /// others. Returns `item`'s outcome once it is committed.
    pub(super) fn submit(&self, item: T, commit: &Commit<'_, T, R>) -> Result<R, QueueError> {
        let mut state = self.state.lock().map_err(|_| QueueError::Poisoned)?;
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push((ticket, item));
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                // An item's own error comes back as it was; one shared by a batch, wrapped.
                return result.map_err(|e| Arc::try_unwrap(e).unwrap_or_else(QueueError::Batch));
            }
            if state.committing {
                state = self
                    .finished
                    .wait(state)
                    .map_err(|_| QueueError::Poisoned)?;
                continue;
            }
            // Lead: take everything waiting (our own item among it) and commit it.
            state.committing = true;
            let batch = std::mem::take(&mut state.waiting);
            drop(state);
            let (tickets, items): (Vec<u64>, Vec<T>) = batch.into_iter().unzip();
            let results: Vec<Result<R, Arc<QueueError>>> = match commit(&items) {
                Ok(outcomes) if outcomes.len() == items.len() => {
                    outcomes.into_iter().map(Ok).collect()
                }
                Ok(_) => {
                    let e = Arc::new(QueueError::Internal(MISCOUNTED));
                    items.iter().map(|_| Err(Arc::clone(&e))).collect()
                }
                Err(e) if items.len() == 1 => vec![Err(Arc::new(e))],
                Err(_) => items
                    .chunks(1)
                    .map(|one| match commit(one) {
                        Ok(mut outcome) if outcome.len() == 1 => Ok(outcome.remove(0)),
                        Ok(_) => Err(Arc::new(QueueError::Internal(MISCOUNTED))),
                        Err(e) => Err(Arc::new(e)),
                    })
                    .collect(),
            };
            state = match self.state.lock() {
                Ok(s) => s,
                Err(_) => {
                    // Followers would wait for ever: wake them to find the poisoned lock.
                    self.finished.notify_all();
                    return Err(QueueError::Poisoned);
                }
            };
            state.done.extend(tickets.into_iter().zip(results));
            state.committing = false;
            self.finished.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn concurrent_items_share_commits_and_all_return_after_theirs() {
        let group = Arc::new(GroupCommit::<u32, u32>::new());
        let commits = Arc::new(AtomicUsize::new(0));
        let committed = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..32)
            .map(|n| {
                let (group, commits, committed) =
                    (group.clone(), commits.clone(), committed.clone());
                std::thread::spawn(move || {
                    let doubled = group
                        .submit(n, &|items: &[u32]| {
                            std::thread::sleep(Duration::from_millis(20)); // an fsync
                            commits.fetch_add(1, Ordering::SeqCst);
                            committed.lock().unwrap().extend_from_slice(items);
                            Ok(items.iter().map(|n| n * 2).collect())
                        })
                        .unwrap();
                    assert_eq!(doubled, n * 2, "each gets its own outcome");
                    // Returned only once committed.
                    assert!(committed.lock().unwrap().contains(&n));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut all = committed.lock().unwrap().clone();
        all.sort_unstable();
        assert_eq!(all, (0..32).collect::<Vec<_>>());
        assert!(
            commits.load(Ordering::SeqCst) < 32,
            "{} commits for 32 items",
            commits.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn one_bad_item_fails_alone() {
        let group = Arc::new(GroupCommit::<u32>::new());
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let group = group.clone();
                std::thread::spawn(move || {
                    let r = group.submit(n, &|items: &[u32]| {
                        std::thread::sleep(Duration::from_millis(5));
                        if items.contains(&3) {
                            Err(QueueError::Poisoned)
                        } else {
                            Ok(vec![(); items.len()])
                        }
                    });
                    (n, r.is_ok())
                })
            })
            .collect();
        for t in threads {
            let (n, ok) = t.join().unwrap();
            assert_eq!(ok, n != 3, "item {n}");
        }
    }
}
