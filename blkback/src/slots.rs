//! [`Pool`]: the bounce buffers of one disk, each lent to one request at a time.
//!
//! Every request that moves data has a bounce buffer of its own (a *slot*) from the moment
//! it is started until its response is produced: the write's data is copied into it before
//! the device is started, the device reads into it or writes from it, a read's data is
//! copied out of it once the device is done. So several requests can be on the device at
//! once, each on its own buffer.
//!
//! A slot is in one of three states:
//!
//! | state | buffer | owner |
//! |---|---|---|
//! | free | here | none |
//! | held | here (the owner copies to or from it) | the queue that reserved it |
//! | lent | with the device ([`Pool::lend`]) until it is given back ([`Pool::give_back`]) | the queue, or none once that queue is gone |
//!
//! A queue that is cut off or closed [`Pool::disown`]s its slots: held ones become free at
//! once, lent ones when the device gives them back, so a buffer is never reused while the
//! device may still write it.
//!
//! Slots come in a few sizes (small ones for ordinary requests, large ones for indirect
//! requests); [`Pool::reserve`] takes the smallest free slot that fits.

use alloc::vec::Vec;

/// A slot of a [`Pool`]: its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot(pub u16);

/// Who holds a slot: a number the caller gives each queue, unique while the queue lives.
pub type Owner = u64;

#[derive(Debug)]
struct Entry<B> {
    capacity_bytes: usize,
    owner: Option<Owner>,
    reserved: bool,
    /// `None` while lent to the device.
    buffer: Option<B>,
}

/// The bounce buffers of one disk (see the module documentation).
#[derive(Debug)]
pub struct Pool<B> {
    entries: Vec<Entry<B>>,
}

impl<B> Pool<B> {
    /// A pool of `buffers`, each with the number of bytes it holds.
    pub fn new(buffers: Vec<(usize, B)>) -> Self {
        Self {
            entries: buffers
                .into_iter()
                .map(|(capacity_bytes, buffer)| Entry {
                    capacity_bytes,
                    owner: None,
                    reserved: false,
                    buffer: Some(buffer),
                })
                .collect(),
        }
    }

    /// How many slots it has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no slot at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The largest request a slot holds.
    pub fn largest_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.capacity_bytes)
            .max()
            .unwrap_or(0)
    }

    /// The bytes all slots hold together.
    pub fn total_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.capacity_bytes).sum()
    }

    /// How many slots are not free (held or lent, owned or not).
    pub fn busy(&self) -> usize {
        self.entries.iter().filter(|e| e.reserved).count()
    }

    /// Reserves the smallest free slot of at least `bytes` for `owner`; `None` if every such
    /// slot is busy.
    pub fn reserve(&mut self, owner: Owner, bytes: usize) -> Option<Slot> {
        let (index, entry) = self
            .entries
            .iter_mut()
            .enumerate()
            .filter(|(_, e)| !e.reserved && e.capacity_bytes >= bytes)
            .min_by_key(|(_, e)| e.capacity_bytes)?;
        entry.reserved = true;
        entry.owner = Some(owner);
        Some(Slot(index as u16))
    }

    fn held(&mut self, slot: Slot, owner: Owner) -> Option<&mut Entry<B>> {
        self.entries
            .get_mut(usize::from(slot.0))
            .filter(|e| e.reserved && e.owner == Some(owner))
    }

    /// The buffer of a slot `owner` holds (not lent).
    pub fn buffer_mut(&mut self, slot: Slot, owner: Owner) -> Option<&mut B> {
        self.held(slot, owner)?.buffer.as_mut()
    }

    /// The buffers of every slot `owner` holds (not lent), with their slots.
    pub fn held_mut(&mut self, owner: Owner) -> impl Iterator<Item = (Slot, &mut B)> {
        self.entries
            .iter_mut()
            .enumerate()
            .filter(move |(_, e)| e.reserved && e.owner == Some(owner))
            .filter_map(|(index, e)| Some((Slot(index as u16), e.buffer.as_mut()?)))
    }

    /// The bytes the slot holds.
    pub fn capacity_bytes(&self, slot: Slot) -> usize {
        self.entries
            .get(usize::from(slot.0))
            .map_or(0, |e| e.capacity_bytes)
    }

    /// Takes the buffer of a slot `owner` holds, to lend it to the device.
    pub fn lend(&mut self, slot: Slot, owner: Owner) -> Option<B> {
        self.held(slot, owner)?.buffer.take()
    }

    /// The device gave a lent buffer back: the slot is held again by its owner, whom this
    /// returns; a slot whose owner is gone is free again (`None`).
    ///
    /// # Panics
    ///
    /// If the slot was not lent (the device gave back a buffer it never had).
    pub fn give_back(&mut self, slot: Slot, buffer: B) -> Option<Owner> {
        let entry = &mut self.entries[usize::from(slot.0)];
        assert!(
            entry.reserved && entry.buffer.is_none(),
            "slot {} given back but not lent",
            slot.0
        );
        entry.buffer = Some(buffer);
        if entry.owner.is_none() {
            entry.reserved = false;
        }
        entry.owner
    }

    /// Frees a slot `owner` holds (not lent). Returns whether it did.
    pub fn release(&mut self, slot: Slot, owner: Owner) -> bool {
        match self.held(slot, owner) {
            Some(entry) if entry.buffer.is_some() => {
                entry.reserved = false;
                entry.owner = None;
                true
            }
            _ => false,
        }
    }

    /// `owner` is gone: its held slots are free, its lent ones will be when the device gives
    /// them back.
    pub fn disown(&mut self, owner: Owner) {
        for entry in &mut self.entries {
            if entry.owner == Some(owner) {
                entry.owner = None;
                if entry.buffer.is_some() {
                    entry.reserved = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn pool() -> Pool<u32> {
        Pool::new(vec![(4096, 0), (1 << 20, 1), (4096, 2), (65536, 3)])
    }

    #[test]
    fn the_smallest_free_slot_that_fits_is_taken() {
        let mut pool = pool();
        assert_eq!(pool.reserve(1, 512), Some(Slot(0)));
        assert_eq!(pool.reserve(1, 4096), Some(Slot(2)));
        assert_eq!(pool.reserve(1, 4096), Some(Slot(3)));
        assert_eq!(pool.reserve(1, 4096), Some(Slot(1)));
        assert_eq!(pool.reserve(1, 1), None);
        assert_eq!(pool.busy(), 4);
        assert!(pool.release(Slot(1), 1));
        assert_eq!(
            pool.reserve(2, (1 << 20) + 1),
            None,
            "nothing is that large"
        );
        assert_eq!(pool.reserve(2, 1 << 20), Some(Slot(1)));
        assert_eq!(pool.largest_bytes(), 1 << 20);
        assert_eq!(pool.total_bytes(), 4096 + (1 << 20) + 4096 + 65536);
    }

    #[test]
    fn only_the_owner_uses_a_slot_and_a_lent_one_is_not_freed() {
        let mut pool = pool();
        let slot = pool.reserve(7, 100).unwrap();
        assert!(pool.buffer_mut(slot, 8).is_none());
        assert_eq!(pool.buffer_mut(slot, 7).copied(), Some(0));
        let other = pool.reserve(7, 100).unwrap();
        let held: Vec<Slot> = pool.held_mut(7).map(|(slot, _)| slot).collect();
        assert_eq!(held, [slot, other]);
        assert!(pool.release(other, 7));
        let buffer = pool.lend(slot, 7).unwrap();
        assert!(pool.lend(slot, 7).is_none(), "lent once");
        assert!(!pool.release(slot, 7), "the device has it");
        assert_eq!(pool.give_back(slot, buffer), Some(7));
        assert!(pool.release(slot, 7));
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn a_disowned_slot_is_free_only_once_the_device_gave_it_back() {
        let mut pool = pool();
        let lent = pool.reserve(3, 4096).unwrap();
        let held = pool.reserve(3, 4096).unwrap();
        let buffer = pool.lend(lent, 3).unwrap();
        pool.disown(3);
        assert_eq!(pool.busy(), 1, "the held slot is free, the lent one is not");
        assert!(pool.buffer_mut(held, 3).is_none());
        // Everything else is reserved by another queue; the lent slot is not among them.
        let others: Vec<Slot> = core::iter::from_fn(|| pool.reserve(4, 1)).collect();
        assert_eq!(others.len(), 3);
        assert!(!others.contains(&lent));
        assert_eq!(pool.give_back(lent, buffer), None);
        assert_eq!(pool.reserve(4, 1), Some(lent));
    }

    #[test]
    #[should_panic(expected = "not lent")]
    fn giving_back_what_was_not_lent_is_a_bug() {
        let mut pool = pool();
        let slot = pool.reserve(1, 1).unwrap();
        pool.give_back(slot, 9);
    }
}
