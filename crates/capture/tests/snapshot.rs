//! The plan interpreter on a hand-built 3.12 memory snapshot: thread search by native id, the
//! cframe hop, a C-stack shim frame (an eval-call boundary), an incomplete frame (skipped), a
//! generator frame (kept although before its first traceable unit), depth truncation and a
//! thread that is not Python.

use capture::frames::ident_of;
use capture::{interpret, Os, Plan};
use pyframe_reader::layout::{self, CurrentFrame, FrameLayout};
use pyframe_reader::Snapshot;

struct Mem(Snapshot);

impl Mem {
    fn u64(&mut self, addr: u64, v: u64) {
        self.0.insert(addr, v.to_le_bytes().to_vec());
    }
    fn i32(&mut self, addr: u64, v: i32) {
        self.0.insert(addr, v.to_le_bytes().to_vec());
    }
    fn u8(&mut self, addr: u64, v: u8) {
        self.0.insert(addr, vec![v]);
    }
}

#[test]
fn interpreter_follows_the_plan_on_a_snapshot() {
    let l = layout::for_version(3, 12).unwrap();
    let FrameLayout::Interpreter(fl) = l.frame else {
        panic!("3.12 has interpreter frames")
    };
    let CurrentFrame::ViaCFrame {
        cframe,
        current_frame,
    } = l.tstate.current_frame
    else {
        panic!("3.12 goes through cframe")
    };
    let adaptive = l.code.code_adaptive.unwrap();
    let ft = l.code.first_traceable.unwrap();
    let (rt, interp, t1, t2, cf) = (0x10_000, 0x20_000, 0x30_000, 0x31_000, 0x32_000);
    let (f1, f2, f3, f4) = (0x40_000, 0x41_000, 0x42_000, 0x43_000);
    let (c1, c2, n1, n2) = (0x50_000, 0x51_000, 0x60_000, 0x61_000);
    let mut m = Mem(Snapshot::new());
    m.u64(rt + l.runtime.interpreters_head, interp);
    m.u64(interp + l.interp.threads_head, t1);
    m.u64(t1 + l.tstate.native_thread_id.unwrap(), 111);
    m.u64(t1 + l.tstate.next, t2);
    m.u64(t2 + l.tstate.native_thread_id.unwrap(), 222);
    m.u64(t2 + l.tstate.next, 0);
    m.u64(t2 + cframe, cf);
    m.u64(cf + current_frame, f1);
    // f1: running c1 at byte 10
    let frame = |m: &mut Mem, f: u64, code: u64, off: u64, owner: u8, prev: u64| {
        m.u64(f + fl.code, code);
        m.u64(f + fl.instr, code + adaptive + off);
        m.u8(f + fl.owner, owner);
        m.u64(f + fl.previous, prev);
    };
    frame(&mut m, f1, c1, 10, 0, f2);
    // f2: the C-stack shim
    m.u8(f2 + fl.owner, fl.first_non_python_owner.unwrap());
    m.u64(f2 + fl.previous, f3);
    // f3: c2 not started yet (before its first traceable unit): skipped
    frame(&mut m, f3, c2, 0, 0, f4);
    // f4: a generator frame of c2, also before it: kept
    frame(&mut m, f4, c2, 2, fl.generator_owner, 0);
    for (c, n, first) in [(c1, n1, 5), (c2, n2, 9)] {
        m.u64(c + l.code.name, n);
        m.i32(c + l.code.firstlineno, first);
    }
    m.i32(c1 + ft, 0);
    m.i32(c2 + ft, 2);

    let plan = Plan::from_layout(l, rt, Os::Linux, 32).unwrap();
    let got = interpret::run(&plan, &m.0, 222).unwrap();
    assert!(!got.no_thread && !got.truncated);
    assert_eq!(got.frames.len(), 2, "{got:?}");
    assert_eq!(
        (
            got.frames[0].code,
            got.frames[0].offset,
            got.frames[0].ident,
            got.frames[0].entry
        ),
        (c1, 10, ident_of(n1, 5), true)
    );
    assert_eq!(
        (
            got.frames[1].code,
            got.frames[1].offset,
            got.frames[1].ident
        ),
        (c2, 2, ident_of(n2, 9))
    );
    // the text form round-trips, boundary included
    let text = capture::frames::format(&got);
    assert_eq!(capture::frames::parse_all(&text).unwrap(), vec![got]);

    // one step: truncated
    let plan1 = Plan::from_layout(l, rt, Os::Linux, 1).unwrap();
    let got = interpret::run(&plan1, &m.0, 222).unwrap();
    assert!(got.truncated);
    assert_eq!(got.frames.len(), 1);
    // a thread the interpreter does not know; a thread list longer than the plan's limit
    assert!(interpret::run(&plan, &m.0, 333).unwrap().no_thread);
    let mut short = plan;
    short.max_threads = 1;
    assert!(interpret::run(&short, &m.0, 222).unwrap().no_thread);
    // bad depth
    assert!(Plan::from_layout(l, rt, Os::Linux, 0).is_err());
}
