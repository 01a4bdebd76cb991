//! A bounded byte queue of replies and watch events waiting to go out to one connection.
//!
//! Transports (the stub domain's rings, the host socket server) keep one per connection
//! and follow two rules, which together bound the memory a client can make the store use:
//!
//! 1. Read the next request from a client only when [`OutputQueue::ready_for_request`]
//!    says its reply is sure to fit (a client that does not read its replies stops being
//!    served, like Xen's limit on outstanding requests).
//! 2. When [`OutputQueue::push`] fails (watch events piled up for a client that does not
//!    read them), disconnect that client.

use alloc::collections::VecDeque;

use crate::wire::MESSAGE_MAX;

/// The queue would exceed its limit; the message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// Bytes waiting to be sent to one connection.
#[derive(Debug)]
pub struct OutputQueue {
    bytes: VecDeque<u8>,
    limit_bytes: usize,
}

impl OutputQueue {
    /// An empty queue holding at most `limit_bytes` (at least one whole message).
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            limit_bytes: limit_bytes.max(MESSAGE_MAX),
        }
    }

    /// Queues a whole message, or refuses it if the queue would exceed its limit.
    pub fn push(&mut self, message: &[u8]) -> Result<(), QueueFull> {
        if self.bytes.len().saturating_add(message.len()) > self.limit_bytes {
            return Err(QueueFull);
        }
        self.bytes.extend(message);
        Ok(())
    }

    /// Whether the reply to one more request (at most one whole message) would fit.
    pub fn ready_for_request(&self) -> bool {
        self.bytes.len() + MESSAGE_MAX <= self.limit_bytes
    }

    /// The queued bytes, oldest first, as two slices (the queue is a ring).
    pub fn as_slices(&self) -> (&[u8], &[u8]) {
        self.bytes.as_slices()
    }

    /// Drops the first `count` bytes, once they are sent.
    pub fn consume(&mut self, count: usize) {
        let count = count.min(self.bytes.len());
        self.bytes.drain(..count);
    }

    /// Copies up to `buffer.len()` queued bytes into `buffer` and drops them from the
    /// queue; returns how many.
    pub fn pop_into(&mut self, buffer: &mut [u8]) -> usize {
        let count = buffer.len().min(self.bytes.len());
        for (slot, byte) in buffer.iter_mut().zip(self.bytes.drain(..count)) {
            *slot = byte;
        }
        count
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ordered() {
        let mut queue = OutputQueue::new(2 * MESSAGE_MAX);
        assert!(queue.ready_for_request());
        queue.push(&[1; MESSAGE_MAX]).unwrap();
        assert!(queue.ready_for_request());
        queue.push(&[2; 10]).unwrap();
        assert!(!queue.ready_for_request());
        assert_eq!(queue.push(&[3; MESSAGE_MAX]), Err(QueueFull));
        let mut buffer = [0u8; MESSAGE_MAX + 5];
        assert_eq!(queue.pop_into(&mut buffer), MESSAGE_MAX + 5);
        assert_eq!(buffer[MESSAGE_MAX], 2);
        assert_eq!(queue.len(), 5);
        queue.consume(100);
        assert!(queue.is_empty());
    }
}
