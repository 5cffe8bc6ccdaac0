//! Memory for message content while it is received, shared by every session of a server.
//!
//! A session keeps the content of the message it is receiving in memory until the end of
//! data (it is handed to [`crate::server::Acceptor::message`] whole). Each session is bounded
//! by [`crate::server::Config::max_message_size`], but many sessions at once are not: a
//! hundred clients that each send most of a 50 MB message and then stall (a slow-loris on
//! DATA) would hold 5 GB. A [`ContentBudget`] bounds them all together: a session reserves
//! room as its content grows, in [`UNIT`]-octet steps; when the budget is used up, that
//! session stops keeping its content, reads the rest to the end and answers
//! `452 4.3.1` (RFC 3463: insufficient system storage), so the client retries later and
//! nothing half-kept is ever stored. Room is given back when the message has been handed on.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The step in which sessions reserve room: 64 KiB.
pub const UNIT: usize = 64 * 1024;

/// Room for message content in memory, over all the sessions that share it.
pub struct ContentBudget {
    units: Arc<Semaphore>,
    total: usize,
}

impl ContentBudget {
    /// A budget of `bytes` octets (rounded up to [`UNIT`]s; at least one).
    pub fn new(bytes: u64) -> Arc<ContentBudget> {
        let total = usize::try_from(bytes.div_ceil(UNIT as u64))
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(ContentBudget {
            units: Arc::new(Semaphore::new(total)),
            total,
        })
    }

    /// Octets not reserved by any session now.
    pub fn available(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT as u64
    }
}

impl fmt::Debug for ContentBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentBudget")
            .field("total", &(self.total as u64 * UNIT as u64))
            .field("available", &self.available())
            .finish()
    }
}

/// One session's share of a [`ContentBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    held: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Grows the reservation to cover `bytes` octets; `false` (and nothing more reserved)
    /// when the budget has no room left.
    pub fn cover(&mut self, budget: &ContentBudget, bytes: usize) -> bool {
        let held = self.held.as_ref().map_or(0, |p| p.num_permits());
        let need = bytes.div_ceil(UNIT);
        if need <= held {
            return true;
        }
        let Ok(more) = u32::try_from(need - held) else {
            return false;
        };
        match Arc::clone(&budget.units).try_acquire_many_owned(more) {
            Ok(more) => {
                match &mut self.held {
                    Some(held) => held.merge(more),
                    None => self.held = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Gives the room back.
    pub fn release(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_the_room_and_give_it_back() {
        let budget = ContentBudget::new(3 * UNIT as u64);
        let (mut a, mut b) = (Reservation::default(), Reservation::default());
        assert!(a.cover(&budget, 1));
        assert!(a.cover(&budget, UNIT + 1));
        assert_eq!(budget.available(), UNIT as u64);
        // b needs two units: there is one.
        assert!(!b.cover(&budget, UNIT + 1));
        assert_eq!(budget.available(), UNIT as u64);
        assert!(b.cover(&budget, UNIT));
        assert_eq!(budget.available(), 0);
        a.release();
        assert!(b.cover(&budget, 3 * UNIT));
        drop(b);
        assert_eq!(budget.available(), 3 * UNIT as u64);
    }

    #[test]
    fn a_budget_has_at_least_one_unit() {
        assert_eq!(ContentBudget::new(0).available(), UNIT as u64);
        assert_eq!(
            ContentBudget::new(UNIT as u64 + 1).available(),
            2 * UNIT as u64
        );
    }
}
