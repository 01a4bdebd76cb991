//! The whole backend on the host, on the simulated machine of [`crate::sim`], with the test
//! playing the domains (writing `out[]`, reading `in[]`) and the UART.

use alloc::vec::Vec;

use microvisor_abi::microvisor_op::DOMAIN_FLAG_DYING;
use xen_ring::SharedPage;

use crate::backend::{Backend, DRAIN_READS_PER_TURN, INPUT_QUEUE_MAX, PROMPT_QUIET_TICKS};
use crate::cons_ring::{INPUT, OUTPUT};
use crate::lines::PARTIAL_LINE_MAX;
use crate::sim::Sim;
use crate::stream_ring::{StreamConsumer, StreamProducer};

/// The domain writes console output (as Linux's hvc driver does).
fn write_out(sim: &Sim, domid: u16, bytes: &[u8]) {
    let page = &sim.pages[&domid];
    let mut producer = StreamProducer::attach(page, OUTPUT).unwrap();
    assert_eq!(
        producer.write(page, bytes).unwrap(),
        bytes.len(),
        "out[] full"
    );
}

/// The domain reads its keyboard input.
fn read_in(sim: &Sim, domid: u16) -> Vec<u8> {
    let page = &sim.pages[&domid];
    let mut consumer = StreamConsumer::attach(page, INPUT).unwrap();
    let mut buffer = [0u8; 1024];
    let count = consumer.read(page, &mut buffer).unwrap();
    buffer[..count].to_vec()
}

fn poke(backend: &mut Backend<Sim>, sim: &mut Sim, domid: u16) {
    let port = sim.port_of(domid).expect("domain is bound");
    assert!(backend.service(sim, port));
}

fn started(sim: &mut Sim) -> Backend<Sim> {
    let mut backend = Backend::new();
    backend.sync(sim);
    backend
}

#[test]
fn sync_serves_domains_with_a_console_port() {
    let mut sim = Sim::new();
    sim.list(2, 0, 7, "xenstore");
    sim.list(3, 0, 8, "guest");
    sim.list(4, 0, 0, "noconsole");
    sim.list(5, DOMAIN_FLAG_DYING, 9, "dying");
    let backend = started(&mut sim);
    assert_eq!(sim.take_lines(), ["[console] serving 2 domains"]);
    assert_eq!(backend.served_domains(), [2, 3]);
    assert_eq!(
        sim.bound.values().copied().collect::<Vec<_>>(),
        [(2, 7), (3, 8)]
    );
    assert_eq!(sim.mapped.keys().copied().collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn output_becomes_labelled_lines() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    let mut backend = started(&mut sim);
    sim.take_lines();
    write_out(&sim, 3, b"Linux version 6.1\r\nsecond ");
    poke(&mut backend, &mut sim, 3);
    assert_eq!(sim.take_lines(), ["[guest] Linux version 6.1"]);
    write_out(&sim, 3, b"line\x1b[0m\n");
    poke(&mut backend, &mut sim, 3);
    assert_eq!(sim.take_lines(), ["[guest] second line?[0m"]);
    // out[] was consumed and the domain told so.
    assert_eq!(
        sim.pages[&3].load_u32(OUTPUT.cons_offset),
        sim.pages[&3].load_u32(OUTPUT.prod_offset)
    );
    assert_eq!(sim.notified.last(), Some(&sim.port_of(3).unwrap()));
}

#[test]
fn output_written_before_connecting_is_printed() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "early");
    write_out(&sim, 3, b"boot message\n");
    let _backend = started(&mut sim);
    assert_eq!(
        sim.take_lines(),
        ["[console] serving 1 domains", "[early] boot message"]
    );
}

#[test]
fn a_full_ring_of_output_wraps_and_long_lines_are_cut() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "chatty");
    let mut backend = started(&mut sim);
    sim.take_lines();
    let mut expected = Vec::new();
    for round in 0..10u8 {
        let line: Vec<u8> = core::iter::repeat_n(b'a' + round, 150)
            .chain([b'\n'])
            .collect();
        write_out(&sim, 3, &line);
        expected.push(alloc::format!(
            "[chatty] {}",
            core::str::from_utf8(&line[..150]).unwrap()
        ));
    }
    // 1510 bytes, then another 1510: the second batch wraps around out[].
    poke(&mut backend, &mut sim, 3);
    let mut lines = sim.take_lines();
    for round in 0..10u8 {
        let line: Vec<u8> = core::iter::repeat_n(b'k' + round, 150)
            .chain([b'\n'])
            .collect();
        write_out(&sim, 3, &line);
    }
    poke(&mut backend, &mut sim, 3);
    lines.extend(sim.take_lines());
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[..10], expected[..]);
    // A line without an end is cut at the limit.
    write_out(&sim, 3, &[b'z'; PARTIAL_LINE_MAX + 1]);
    poke(&mut backend, &mut sim, 3);
    let lines = sim.take_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].len(), "[chatty] ".len() + PARTIAL_LINE_MAX);
}

#[test]
fn attach_sends_input_and_ctrl_bracket_detaches() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    sim.list(4, 0, 9, "other");
    let mut backend = started(&mut sim);
    sim.take_lines();
    backend.uart_input(&mut sim, b"ls\r");
    assert_eq!(
        sim.take_lines(),
        ["[console] unknown command: ls (try help)"]
    );
    assert!(read_in(&sim, 3).is_empty());
    backend.uart_input(&mut sim, b"attach guest\r");
    assert_eq!(
        sim.take_lines(),
        ["[console] attached to guest; Ctrl-] to leave"]
    );
    sim.notified.clear();
    backend.uart_input(&mut sim, b"ls\r");
    assert_eq!(read_in(&sim, 3), b"ls\r");
    assert_eq!(sim.notified, [sim.port_of(3).unwrap()]);
    assert!(read_in(&sim, 4).is_empty());
    backend.uart_input(&mut sim, &[0x1d]);
    assert_eq!(sim.take_lines(), ["[console] detached"]);
    backend.uart_input(&mut sim, b"x");
    assert!(read_in(&sim, 3).is_empty());
    assert_eq!(backend.attached(), None);
}

#[test]
fn input_waits_for_room_in_the_ring() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach guest\r");
    // More than the queue holds arrives at once: the excess is dropped; in[] (1024 bytes)
    // takes what fits, the rest waits until the domain reads.
    let typed = [b'q'; INPUT_QUEUE_MAX + 100];
    backend.uart_input(&mut sim, &typed);
    assert_eq!(read_in(&sim, 3).len(), 1024);
    backend.tick(&mut sim);
    let mut total = 1024;
    loop {
        let got = read_in(&sim, 3).len();
        if got == 0 {
            break;
        }
        total += got;
        backend.tick(&mut sim);
    }
    assert_eq!(total, INPUT_QUEUE_MAX);
}

#[test]
fn a_quiet_attached_domain_shows_its_prompt() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    sim.list(4, 0, 9, "other");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach guest\r");
    sim.take_lines();
    write_out(&sim, 3, b"~ # ");
    write_out(&sim, 4, b"partial");
    poke(&mut backend, &mut sim, 3);
    poke(&mut backend, &mut sim, 4);
    for _ in 0..PROMPT_QUIET_TICKS - 1 {
        backend.tick(&mut sim);
    }
    assert_eq!(sim.take_lines(), Vec::<alloc::string::String>::new());
    backend.tick(&mut sim);
    // Only the attached domain's partial line is shown early.
    assert_eq!(sim.take_lines(), ["[guest] ~ # "]);
}

#[test]
fn a_hostile_output_index_disconnects_the_domain() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "rogue");
    sim.list(4, 0, 9, "fine");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach rogue\r");
    sim.take_lines();
    write_out(&sim, 3, b"half a line");
    sim.pages[&3].store_u32(OUTPUT.prod_offset, 2049 + 11);
    poke(&mut backend, &mut sim, 3);
    assert_eq!(
        sim.take_lines(),
        [
            "[console] domain 3 (rogue) broke the ring protocol, disconnected",
            "[console] rogue went away; detached"
        ]
    );
    assert_eq!(backend.served_domains(), [4]);
    assert!(sim.port_of(3).is_none() && !sim.mapped.contains_key(&3));
    // Not served again while it lives.
    sim.pages[&3].store_u32(OUTPUT.prod_offset, 11);
    backend.sync(&mut sim);
    assert_eq!(backend.served_domains(), [4]);
}

#[test]
fn a_dying_domain_whose_ring_goes_bad_is_dropped_without_blame() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach guest\r");
    sim.take_lines();
    // The domain is being torn down: its revoked ring page reads as something else.
    sim.unlist(3);
    sim.list(3, DOMAIN_FLAG_DYING, 8, "guest");
    sim.pages[&3].store_u32(OUTPUT.prod_offset, 2049 + 11);
    poke(&mut backend, &mut sim, 3);
    assert_eq!(sim.take_lines(), ["[console] guest went away; detached"]);
    assert_eq!(backend.served(), 0);
    // Gone from the list altogether: the same.
    sim.unlist(3);
    sim.list(4, 0, 9, "other");
    backend.sync(&mut sim);
    sim.take_lines();
    sim.unlist(4);
    sim.pages[&4].store_u32(OUTPUT.prod_offset, 9000);
    poke(&mut backend, &mut sim, 4);
    assert!(sim.take_lines().iter().all(|line| !line.contains("broke")));
    assert_eq!(backend.served(), 0);
}

#[test]
fn a_hostile_input_index_disconnects_the_domain() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "rogue");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach rogue\r");
    sim.take_lines();
    sim.pages[&3].store_u32(INPUT.cons_offset, 77);
    backend.uart_input(&mut sim, b"x");
    assert_eq!(
        sim.take_lines(),
        [
            "[console] domain 3 (rogue) broke the ring protocol, disconnected",
            "[console] rogue went away; detached"
        ]
    );
    assert_eq!(backend.served(), 0);
}

#[test]
fn a_broken_ring_is_refused_at_connect() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "rogue");
    sim.pages[&3].store_u32(OUTPUT.prod_offset, 5000);
    let backend = started(&mut sim);
    assert_eq!(
        sim.take_lines(),
        [
            "[console] domain 3 (rogue) broke the ring protocol, disconnected",
            "[console] serving 0 domains"
        ]
    );
    assert_eq!(backend.served(), 0);
    assert!(sim.mapped.is_empty() && sim.bound.is_empty());
}

#[test]
fn a_domain_going_away_flushes_and_detaches() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach guest\r");
    write_out(&sim, 3, b"last words");
    poke(&mut backend, &mut sim, 3);
    sim.take_lines();
    sim.list(3, DOMAIN_FLAG_DYING, 8, "guest");
    backend.sync(&mut sim);
    assert_eq!(
        sim.take_lines(),
        [
            "[guest] last words",
            "[console] guest went away; detached",
            "[console] serving 0 domains"
        ]
    );
    assert!(sim.bound.is_empty() && sim.mapped.is_empty());
    // A restarted instance (new id, same name) is served and can be attached again.
    sim.unlist(3);
    sim.list(6, 0, 8, "guest");
    backend.sync(&mut sim);
    backend.uart_input(&mut sim, b"attach guest\r");
    assert_eq!(
        sim.take_lines(),
        [
            "[console] serving 1 domains",
            "[console] attached to guest; Ctrl-] to leave"
        ]
    );
    assert_eq!(backend.attached(), Some(6));
}

#[test]
fn list_names_the_served_domains() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    sim.list(4, 0, 9, "other");
    let mut backend = started(&mut sim);
    sim.take_lines();
    backend.uart_input(&mut sim, b"list\r");
    assert_eq!(sim.take_lines(), ["[console] domains: guest other"]);
}

#[test]
fn unknown_ports_are_not_served() {
    let mut sim = Sim::new();
    let mut backend = started(&mut sim);
    assert!(!backend.service(&mut sim, 99));
}

#[test]
fn output_without_a_notification_is_drained_on_the_next_tick() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "quiet");
    let mut backend = started(&mut sim);
    sim.take_lines();
    write_out(&sim, 3, b"no event sent\n");
    backend.tick(&mut sim);
    assert_eq!(sim.take_lines(), ["[quiet] no event sent"]);
}

#[test]
fn a_writer_that_never_pauses_gets_a_bounded_turn() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "busy");
    let mut backend = started(&mut sim);
    sim.take_lines();
    let page = sim.pages[&3].clone();
    page.refill_on_read(1000);
    poke(&mut backend, &mut sim, 3);
    assert_eq!(1000 - page.refills_left(), DRAIN_READS_PER_TURN as u32);
    assert_eq!(
        sim.take_lines().len(),
        DRAIN_READS_PER_TURN * 2048 / PARTIAL_LINE_MAX
    );
}

#[test]
fn a_domain_restarting_under_its_id_is_connected_again_and_stays_attached() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "netback");
    sim.list(4, 0, 9, "other");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach netback\r");
    write_out(&sim, 3, b"crashing");
    poke(&mut backend, &mut sim, 3);
    sim.take_lines();
    let old_port = sim.port_of(3).unwrap();
    // Being rebuilt: its partial line is printed, input stays attached to it.
    sim.list_restarting(3, "netback");
    backend.sync(&mut sim);
    assert_eq!(
        sim.take_lines(),
        [
            "[netback] crashing",
            "[console] netback is restarting; still attached",
            "[console] serving 1 domains"
        ]
    );
    assert_eq!(backend.served_domains(), [4]);
    assert_eq!(backend.returning(), [3]);
    assert_eq!(backend.attached(), Some(3));
    assert!(sim.port_of(3).is_none() && !sim.mapped.contains_key(&3));
    // Typed while it is away: dropped, nothing breaks.
    backend.uart_input(&mut sim, b"lost");
    assert!(sim.take_lines().is_empty());
    // The new build: its new page and port are served, and typed input reaches it.
    sim.list_restarted(3, 12, "netback");
    write_out(&sim, 3, b"booted again\n");
    backend.sync(&mut sim);
    assert_eq!(
        sim.take_lines(),
        ["[console] serving 2 domains", "[netback] booted again"]
    );
    assert!(backend.returning().is_empty());
    assert_eq!(sim.bound[&sim.port_of(3).unwrap()], (3, 12));
    assert_ne!(sim.port_of(3), Some(old_port));
    backend.uart_input(&mut sim, b"ls\r");
    assert_eq!(read_in(&sim, 3), b"ls\r");
    assert_eq!(backend.attached(), Some(3));
}

#[test]
fn a_restart_seen_only_after_the_fact_reconnects_the_same_id() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "netback");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach netback\r");
    sim.take_lines();
    let old_port = sim.port_of(3).unwrap();
    sim.list_restarted(3, 12, "netback");
    backend.sync(&mut sim);
    assert_eq!(
        sim.take_lines(),
        [
            "[console] netback is restarting; still attached",
            "[console] serving 1 domains"
        ]
    );
    assert!(!sim.bound.contains_key(&old_port));
    assert_eq!(sim.bound[&sim.port_of(3).unwrap()], (3, 12));
    assert_eq!(sim.mapped[&3], 1);
    backend.uart_input(&mut sim, b"x");
    assert_eq!(read_in(&sim, 3), b"x");
}

#[test]
fn a_restarting_domain_the_microvisor_gives_up_on_is_detached() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "netback");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach netback\r");
    sim.list_restarting(3, "netback");
    backend.sync(&mut sim);
    sim.take_lines();
    sim.unlist(3);
    backend.sync(&mut sim);
    assert_eq!(
        sim.take_lines(),
        [
            "[console] netback went away; detached",
            "[console] serving 0 domains"
        ]
    );
    assert!(backend.returning().is_empty());
    assert_eq!(backend.attached(), None);
}

#[test]
fn a_restarting_domain_whose_ring_goes_bad_is_awaited_without_blame() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "netback");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach netback\r");
    sim.take_lines();
    sim.list_restarting(3, "netback");
    sim.pages[&3].store_u32(OUTPUT.prod_offset, 2049 + 11);
    poke(&mut backend, &mut sim, 3);
    assert_eq!(
        sim.take_lines(),
        ["[console] netback is restarting; still attached"]
    );
    assert_eq!(backend.returning(), [3]);
    sim.list_restarted(3, 12, "netback");
    backend.sync(&mut sim);
    assert_eq!(backend.served_domains(), [3]);
    assert_eq!(backend.attached(), Some(3));
}

#[test]
fn the_attach_line_carries_one_domain_raw_both_ways() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    sim.list(4, 0, 9, "other");
    let mut backend = started(&mut sim);
    sim.take_lines();
    backend.attach_input(&mut sim, b"\x1dattach nobody\n");
    assert_eq!(sim.attach, b"error: no domain named nobody\n");
    assert_eq!(backend.attach_session(), None);
    sim.attach.clear();
    backend.attach_input(&mut sim, b"\x1dattach guest\n");
    assert_eq!(sim.attach, b"ok guest\n");
    assert_eq!(sim.take_lines(), ["[console] xl console attached to guest"]);
    sim.attach.clear();
    // Output: raw on the attach line (escape sequences, tabs, a partial line, `\r`), and
    // still labelled and made printable on the first UART.
    write_out(&sim, 3, b"red\x1b[31m\tx\r\nguest# ");
    write_out(&sim, 4, b"not this one\n");
    poke(&mut backend, &mut sim, 3);
    poke(&mut backend, &mut sim, 4);
    assert_eq!(sim.attach, b"red\x1b[31m\tx\r\nguest# ");
    assert_eq!(
        sim.take_lines(),
        ["[guest] red?[31m\tx", "[other] not this one"]
    );
    // Input: every byte but Ctrl-], Ctrl-C included, reaches the domain's in[] ring.
    backend.attach_input(&mut sim, b"ls\t\x03\x1b[A\r");
    assert_eq!(read_in(&sim, 3), b"ls\t\x03\x1b[A\r");
    assert!(read_in(&sim, 4).is_empty());
    // Ctrl-] detaches: no more output to the attach line.
    backend.attach_input(&mut sim, b"\x1d");
    assert_eq!(sim.take_lines(), ["[console] xl console left guest"]);
    sim.attach.clear();
    write_out(&sim, 3, b"after\n");
    poke(&mut backend, &mut sim, 3);
    assert!(sim.attach.is_empty());
    assert_eq!(backend.attach_session(), None);
}

#[test]
fn the_attach_line_and_the_first_uart_can_attach_at_once() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    sim.list(4, 0, 9, "other");
    let mut backend = started(&mut sim);
    backend.uart_input(&mut sim, b"attach other\r");
    backend.attach_input(&mut sim, b"attach guest\n");
    backend.uart_input(&mut sim, b"a");
    backend.attach_input(&mut sim, b"b");
    assert_eq!(read_in(&sim, 4), b"a");
    assert_eq!(read_in(&sim, 3), b"b");
    assert_eq!(backend.attached(), Some(4));
    assert_eq!(backend.attach_session(), Some(3));
}

#[test]
fn the_attach_line_says_when_its_domain_is_gone() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    let mut backend = started(&mut sim);
    backend.attach_input(&mut sim, b"attach guest\n");
    sim.take_lines();
    sim.attach.clear();
    write_out(&sim, 3, b"reboot: Power down");
    poke(&mut backend, &mut sim, 3);
    sim.list(3, DOMAIN_FLAG_DYING, 8, "guest");
    backend.sync(&mut sim);
    assert_eq!(
        sim.attach,
        b"reboot: Power down\r\n[domain guest is gone]\r\n".to_vec()
    );
    assert_eq!(
        sim.take_lines(),
        [
            "[guest] reboot: Power down",
            "[console] xl console: guest is gone; detached",
            "[console] serving 0 domains"
        ]
    );
    assert_eq!(backend.attach_session(), None);
    // A new domain of that name (another id) can be attached again.
    sim.unlist(3);
    sim.list(6, 0, 8, "guest");
    backend.sync(&mut sim);
    sim.attach.clear();
    backend.attach_input(&mut sim, b"attach guest\n");
    assert_eq!(sim.attach, b"ok guest\n");
    assert_eq!(backend.attach_session(), Some(6));
}

#[test]
fn the_attach_line_stays_with_a_domain_restarting_under_its_id() {
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "netback");
    let mut backend = started(&mut sim);
    backend.attach_input(&mut sim, b"attach netback\n");
    sim.list_restarting(3, "netback");
    backend.sync(&mut sim);
    assert_eq!(backend.attach_session(), Some(3));
    sim.list_restarted(3, 12, "netback");
    backend.sync(&mut sim);
    sim.attach.clear();
    write_out(&sim, 3, b"back\n");
    poke(&mut backend, &mut sim, 3);
    assert_eq!(sim.attach, b"back\n");
    backend.attach_input(&mut sim, b"x");
    assert_eq!(read_in(&sim, 3), b"x");
}

#[test]
fn a_client_that_does_not_read_stalls_nothing() {
    use crate::attach::OUTPUT_MAX;
    use crate::backend::DROP_REPORT_TICKS;
    let mut sim = Sim::new();
    sim.list(3, 0, 8, "guest");
    let mut backend = started(&mut sim);
    sim.attach_room = Some(0);
    backend.attach_input(&mut sim, b"attach guest\n");
    sim.take_lines();
    // The domain writes far more than the queue holds: every ring-full is still consumed
    // (the domain never waits) and printed on the first UART.
    let chunk = [b'y'; 1000];
    for _ in 0..40 {
        write_out(&sim, 3, &chunk);
        poke(&mut backend, &mut sim, 3);
    }
    assert_eq!(
        sim.pages[&3].load_u32(OUTPUT.cons_offset),
        sim.pages[&3].load_u32(OUTPUT.prod_offset)
    );
    assert!(sim.attach.is_empty());
    let dropped = 40_000 + "ok guest\n".len() as u64 - OUTPUT_MAX as u64;
    assert_eq!(backend.attach_dropped(), dropped);
    // Reported on the first UART, at most once in DROP_REPORT_TICKS.
    sim.uart.clear();
    backend.tick(&mut sim);
    let report = format!(
        "[console] xl console: {dropped} bytes of output dropped (the client is not reading)"
    );
    assert!(String::from_utf8_lossy(&sim.uart).contains(&report));
    write_out(&sim, 3, &chunk);
    poke(&mut backend, &mut sim, 3);
    sim.uart.clear();
    for _ in 0..DROP_REPORT_TICKS - 1 {
        backend.tick(&mut sim);
    }
    assert!(!String::from_utf8_lossy(&sim.uart).contains("dropped"));
    backend.tick(&mut sim);
    assert!(String::from_utf8_lossy(&sim.uart).contains("1000 bytes of output dropped"));
    // The client reads again: the queue drains in order, starting with the answer.
    sim.attach_room = None;
    backend.tick(&mut sim);
    assert_eq!(sim.attach.len(), OUTPUT_MAX);
    assert!(sim.attach.starts_with(b"ok guest\nyyy"));
}
