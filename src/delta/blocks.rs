//! A reader of the byte blocks another thread sends: the payload's lanes are decompressed,
//! and a `files` layer's chunks decoded, on threads of their own, and read through this.

use std::io::{self, Read};
use std::sync::mpsc::Receiver;

/// What the sending thread sends: a block, the end (`None`), or the error that ended it.
pub(crate) type Block = io::Result<Option<Vec<u8>>>;

/// Reads the blocks a thread sends, in order. A sender that goes away before the end is
/// an error, not an end.
pub(crate) struct BlockReader {
    blocks: Receiver<Block>,
    /// Where read blocks go, to be reused.
    spent: Box<dyn FnMut(Vec<u8>) + Send>,
    /// The thread's name in the error when it stops early.
    sender: &'static str,
    block: Vec<u8>,
    at: usize,
    ended: bool,
}

impl BlockReader {
    /// Reads `blocks`, handing each read block to `spent`; `sender` names the sending
    /// thread in errors.
    pub(crate) fn new(
        blocks: Receiver<Block>,
        sender: &'static str,
        spent: impl FnMut(Vec<u8>) + Send + 'static,
    ) -> BlockReader {
        BlockReader {
            blocks,
            spent: Box::new(spent),
            sender,
            block: Vec::new(),
            at: 0,
            ended: false,
        }
    }
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if self.ended {
                return Ok(0);
            }
            match self.blocks.recv() {
                Ok(Ok(Some(block))) => {
                    let spent = std::mem::replace(&mut self.block, block);
                    self.at = 0;
                    (self.spent)(spent);
                }
                Ok(Ok(None)) => self.ended = true,
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other(format!("{} stopped", self.sender)));
                }
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
