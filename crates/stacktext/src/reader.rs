//! Line reader over any `Read` with a bounded buffer: lines longer than the bound are handed
//! out in pieces (flagged incomplete) so memory stays constant.

use std::io::{self, Read};

const INITIAL: usize = 64 * 1024;

pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    scanned: usize,
    eof: bool,
    max: usize,
}

impl<R: Read> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        let max = max.max(16);
        LineReader {
            inner,
            buf: vec![0; INITIAL.min(max)],
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
            max,
        }
    }

    /// The next line with its terminator, and whether it is complete (false: a piece of a
    /// line longer than the bound; the rest follows).
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(&[u8], bool)>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let (s, e) = (self.start, self.scanned + i + 1);
                self.start = e;
                self.scanned = e;
                return Ok(Some((&self.buf[s..e], true)));
            }
            self.scanned = self.end;
            if self.eof {
                if self.start < self.end {
                    let s = self.start;
                    self.start = self.end;
                    return Ok(Some((&self.buf[s..self.end], true)));
                }
                return Ok(None);
            }
            if self.end - self.start >= self.max {
                let s = self.start;
                self.start = self.end;
                return Ok(Some((&self.buf[s..self.end], false)));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let n = (self.buf.len() * 2).min(self.max);
                self.buf.resize(n, 0);
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces() {
        let data = b"ab\ncdefghijklmnopqrstuvwxyz0123\nend";
        let mut r = LineReader::new(&data[..], 16);
        let mut out = Vec::new();
        while let Some((l, c)) = r.next_line().unwrap() {
            out.push((l.to_vec(), c));
        }
        assert_eq!(out[0], (b"ab\n".to_vec(), true));
        assert!(!out[1].1);
        let all: Vec<u8> = out.iter().flat_map(|(l, _)| l.clone()).collect();
        assert_eq!(all, data);
        assert_eq!(out.last().unwrap(), &(b"end".to_vec(), true));
    }
}
