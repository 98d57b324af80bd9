/*
 * tests/spin/shm_protocol.pml: the publish / read / reclaim protocol of shm/store.cc.
 *
 * One writer (Writer::Writer, Writer::publish, acquire_free_buffer, slot_holds), NR
 * readers (Reader::Reader, Reader::enter, Reader::leave), the supervisor
 * (Store::clear_reader_slot, Store::clear_writer, reaping and respawning children), a
 * killer that kills or stops processes at any step, and the memory system (store
 * buffers that drain at any time).  docs/architecture.md, "Model checking (spin)", maps
 * every step below to its statement in shm/store.cc; a change to one is a change to both.
 * The [Pn] labels are those of the code.
 *
 * Memory model.  Every process has a FIFO store buffer for its protocol stores, as in
 * x86-TSO: the writer's store of Control::current [P1] and each reader's stores of
 * ReaderSlot::reading [P3] [P5] are not visible to other processes until the buffer
 * drains (Memory process, at any time), while the process itself reads its own pending
 * store (store forwarding).  A seq_cst fence ([P4], [P6]) drains the buffer of its
 * process.  This admits the store-buffer (SB) reordering "store; load of another
 * location" that the two fences exist to forbid: remove one (-DNO_FENCE_P4,
 * -DNO_FENCE_P6) and the checker finds the lost-announce execution.  RMWs on other
 * words (the writer's relaxed counter fetch_adds, the slot CASes) are deliberately NOT
 * treated as fences: on x86 they are, in C++ they are not.  Depth one is enough: a
 * process never has two protocol stores pending across a load that matters (a second
 * store first flushes the older one, which is one of the TSO orders).  Stores whose
 * visibility is published by [P1]/[P2] (snapshot bytes, BufferDesc) are modelled as
 * immediate: FIFO draining puts them before [P1] anyway.
 *
 * Bug variants (each must produce a counterexample):
 *   -DNO_RECHECK      Reader::enter does not re-load current after the announce
 *   -DNO_REUSE_WAIT   acquire_free_buffer takes the next non-current buffer, no slot scan
 *   -DNO_FENCE_P4     no seq_cst fence between the announce [P3] and the re-check [P2']
 *   -DNO_FENCE_P6     no seq_cst fence before the writer's slot scan
 *   -DNO_REMAP        Reader::enter keeps an old mapping after the buffer grew
 *   -DOLD_CLEAR       with -DRESPAWN_EARLY: clear_reader_slot and slot_holds free a dead
 *                     owner's slot as before 76d122b (load pid, store/CAS reading 0, CAS pid),
 *                     not through the busy mark: the clear erases a replacement's announcement
 *   -DANON_BUSY       with -DCHECK_HANDOVER: the anonymous busy mark of 76d122b (kSlotBusy = -1)
 *                     instead of -P: a busy pid is taken as live (claims wait or throw,
 *                     slot_holds: held), clear_reader_slot and clear_writer only CAS from the
 *                     reaped pid: a process killed inside a hand-over blocks it for good
 *
 * Options that are not bugs:
 *   -DRESPAWN_EARLY   the supervisor starts a replacement reader on the slot before it
 *                     clears the dead one's (the race 76d122b fixed: must pass)
 *   -DRESPAWN_READERS the supervisor starts a replacement after clearing
 *   -DNO_CLEAR_BUSY   clear_reader_slot and clear_writer leave a reaped process's busy mark
 *                     alone (no CAS from -pid): the claims must still take it over (a check
 *                     that this path works on its own, not a bug)
 *   -DCHECK_HANDOVER  a claim that never gets past a busy pid (its holder died inside the
 *                     hand-over and nobody finishes it) is an error instead of a refusal: the
 *                     writer's refusal asserts, a reader waiting for good is an invalid end state
 *   -DSKIP_IS_PROGRESS  a counted skip is a progress step (for pan -l)
 */

#define NR 3          /* reader slots, one reader process each (the model spells out 3) */
#ifndef RUN_READERS
#define RUN_READERS NR /* reader processes started (slots 0 .. RUN_READERS-1; the rest stay free) */
#endif
#ifndef NB
#define NB 3          /* Control::buffer_count (the default of StoreOptions) */
#endif
#ifndef MAXG
#define MAXG 4        /* generations published (bounded for exhaustive search) */
#endif
#ifndef RDEATHS
#define RDEATHS 1     /* reader deaths in a run */
#endif
#ifndef WDEATHS
#define WDEATHS 1     /* writer deaths (each followed by a replacement writer) */
#endif
#ifndef RSTOPS
#define RSTOPS 0      /* readers that stop for ever */
#endif
#ifndef GROWS
#define GROWS 1       /* buffer growths (new incarnation, BufferDesc::seq + 1) */
#endif
#ifndef READS
#define READS 2       /* reads (enter/leave) per reader process (bounded for exhaustive search) */
#endif
#ifndef ROUNDS
#define ROUNDS 2      /* scan rounds at most before the reclaim deadline passes (round 1 checks liveness) */
#endif

/* ReaderSlot::pid / Control::writer_pid: 0 free, > 0 the owner's id, < 0 busy: -P while
   process P changes hands (busy_mark() = -getpid()). Ids are unique (pid and start token
   folded): readers RPID (1..), the supervisor SPID, writers WPID (100..). */
#define SPID 99       /* the supervisor (never dies in the model) */
#ifdef ANON_BUSY
#define ANON (-1)     /* kSlotBusy of 76d122b: names nobody (never read as a holder here) */
#define MARK(q)       ANON
#define BUSY_LIVE(v)  ((v) == ANON)                       /* taken to be live, always */
#else
#define MARK(q)       (-(q))                              /* busy_mark() */
#define BUSY_LIVE(v)  ((v) < 0 && HOLDER_ALIVE(-(v)))     /* v < 0 && busy_holder_alive(v) */
#endif

/* Control::current: pack_current(generation, buffer); the code shifts by 8, the model by 2 */
#define WORD(g, b)  ((g) * 4 + (b))
#define GEN(w)      ((w) / 4)
#define BUF(w)      ((w) % 4)

/* abstract buffer contents */
#define EMPTY     0
#define WRITING   1   /* being written (or torn by a writer that died writing it) */
#define READABLE  2

/* ---------------- shared state: names as in shm/layout.h ---------------- */
byte current;                 /* Control::current, as visible in memory */
short writer_pid;             /* Control::writer_pid (pid + start token folded: unique id; < 0 busy) */
bit  publish_skipped;         /* Control::publish_skipped, saturated at 1 */
byte seq[NB];                 /* BufferDesc::seq: incarnation of buffer b */
byte generation[NB];          /* BufferDesc::generation */
byte bstate[NB];              /* abstract: EMPTY / WRITING / READABLE */
short slot_pid[NR];           /* ReaderSlot::pid (+ start_token): 0 free, > 0 owner, < 0 busy */
byte reading[NR];             /* ReaderSlot::reading, as visible in memory */

/* ---------------- memory system: one-entry store buffers ---------------- */
bool wsb_full; byte wsb_val;          /* writer: pending store of current */
bool rsb_full[NR]; byte rsb_val[NR];  /* reader r: pending store of reading[r] */

/* ---------------- processes (the kernel's view) ---------------- */
byte rpid_cur[NR];      /* pid of the live incarnation of reader r */
bool ralive[NR];        /* that process exists (not yet reaped; process_alive also needs !rzombie) */
bool rkill[NR], rstop[NR], rzombie[NR], rrespawn[NR];
byte wpid_cur;
bool walive, wkill, wzombie, wrespawn;

/* ---------------- observers for the properties ---------------- */
byte rbuf[NR];          /* buffer + 1 reader r is reading (between enter() and leave()), 0 none */
byte lastgen[NR];       /* last generation slot r's readers read */
byte maxpub;            /* highest generation any writer has stored into current */
bool wpub;              /* the writer is inside publish() */
bool killer_done;
byte growths;           /* buffer growths so far (bounded by GROWS) */

#define RPID(r, inc)   (1 + (r) + NR * (inc))
/* process_alive(pid, start_token): a zombie counts as gone (process_start_token reads 'Z') */
#define RALIVE(p)      ((p) > 0 && (p) < SPID && rpid_cur[((p) - 1) % NR] == (p) && \
                        ralive[((p) - 1) % NR] && !rzombie[((p) - 1) % NR])
#define WPID(inc)      (100 + (inc))
#define WALIVE(p)      ((p) >= 100 && wpid_cur == (p) && walive && !wzombie)
/* busy_holder_alive: process_start_token(holder) != 0 (no token: a zombie is dead) */
#define HOLDER_ALIVE(q) ((q) == SPID || RALIVE(q) || WALIVE(q))

/* store through the store buffer (a full buffer drains first) */
#define STORE_R(r, v)  atomic { if :: rsb_full[r] -> reading[r] = rsb_val[r] :: else fi; \
                                rsb_full[r] = true; rsb_val[r] = (v) }
#define FLUSH_R(r)     if :: rsb_full[r] -> reading[r] = rsb_val[r]; rsb_full[r] = false :: else fi
#define FLUSH_W        if :: wsb_full -> assert(GEN(wsb_val) > GEN(current)); current = wsb_val; \
                             wsb_full = false :: else fi
/* the writer's own load of current sees its pending store */
#define WLOAD_CURRENT  (wsb_full -> wsb_val : current)

/* ============================== Memory ============================== */
active proctype Memory() {
  byte r;
end:
  do
  :: atomic { wsb_full -> FLUSH_W }
  :: atomic { rsb_full[0] -> FLUSH_R(0) }
  :: atomic { rsb_full[1] -> FLUSH_R(1) }
  :: atomic { rsb_full[2] -> FLUSH_R(2) }
  od
}

/* ============================== Reader ============================== */
/* Locals are reset once dead so that equal situations are equal states. */
proctype Reader(byte r) {
  byte me, w, again, b, s, nreads;
  short owner;
  byte mapped[NB];      /* Reader::maps_[b]->segment.seq, 0 = not mapped */
  byte inc = 0;
restart:
  me = RPID(r, inc);
  /* Reader::Reader: claim the slot through the busy mark -me. It waits while the pid is the
     busy mark of a live holder (the code throws "stays busy" after 100000 yields); a mark
     whose holder is dead is claimed like a dead owner. */
#ifndef CHECK_HANDOVER
end_claim:
#endif
  {
    if
    :: inc == 0 ->
       /* First start: pid 0, reading 0. Nobody else acts on a slot with pid 0 and reading 0
          (slot_holds looks at pid only when reading != 0; clears need a dead pid), so the
          steps below are invisible to others here and run as one (a state-space reduction). */
       atomic { assert(slot_pid[r] == 0 && reading[r] == 0 && !rsb_full[r]); slot_pid[r] = me }
    :: else ->
    do
    :: /* pid load (acquire), busy_holder_alive: wait while busy with a live holder */
       atomic { !BUSY_LIVE(slot_pid[r]) -> owner = slot_pid[r] };
       assert(owner <= 0 || owner == me || !RALIVE(owner));   /* environment: no live owner */
       atomic {                                       /* CAS pid owner -> busy_mark() (acq_rel) */
         if
         :: slot_pid[r] == owner -> slot_pid[r] = MARK(me); owner = 0; break
         :: else -> owner = 0                         /* changed under us: look again */
         fi
       }
    od;
    STORE_R(r, 0);                                    /* start_token; reading.store(0, relaxed) */
    atomic { FLUSH_R(r); slot_pid[r] = me }           /* pid.store(getpid(), release) */
    fi;
    do
    :: nreads >= READS -> break
    :: nreads < READS ->
       /* Reader::enter(). Before the first publish it returns nullopt: the model waits (an
          end state: a reader that keeps getting nullopt is not stuck). */
end_nopub:
       atomic { current != 0 -> w = current };        /* [P2] acquire */
       do
       :: STORE_R(r, w);                              /* [P3] announce (relaxed) */
#ifdef NO_RECHECK
          atomic { FLUSH_R(r) };                      /* [P4] ... and no re-check */
          break
#else
          atomic {
#ifndef NO_FENCE_P4
            FLUSH_R(r);                               /* [P4] seq_cst fence */
#endif
            again = current;                          /* [P2'] re-check */
            if
            :: again == w -> again = 0; break
            :: else -> w = again; again = 0           /* a publish came in: announce it */
            fi
          }
#endif
       od;
       atomic {
         b = BUF(w);
         s = seq[b];                                  /* BufferDesc::seq, ordered by [P2] */
#ifdef NO_REMAP
         if :: mapped[b] == 0 -> mapped[b] = s :: else fi;
#else
         if :: mapped[b] != s -> mapped[b] = s :: else fi;   /* first sight or grown: re-map */
#endif
         s = 0;
         /* SnapshotView::open + generation check: the read begins */
         assert(bstate[b] == READABLE && generation[b] == GEN(w) && mapped[b] == seq[b]);  /* (1) */
         assert(GEN(w) >= lastgen[r]);                                                      /* (2) */
         lastgen[r] = GEN(w);
         rbuf[r] = b + 1
       };
       /* ... lookups in the snapshot; the Guard is destroyed: leave() */
       atomic {
         assert(bstate[b] == READABLE && generation[b] == GEN(w)); rbuf[r] = 0;   /* (1) */
         w = 0; b = 0; nreads++;
         FLUSH_R(r); reading[r] = 0                   /* [P5] release store of 0 */
       }
    od;
end_done:
    false                                             /* model bound: READS reads per process */
  } unless {
    if
    :: rkill[r] ->
       /* SIGKILL at any step. The kernel ends the process; its store buffer drains. It is a
          zombie (process_alive() still true) until the supervisor reaps it. */
       atomic { FLUSH_R(r); rbuf[r] = 0; rzombie[r] = true;
                w = 0; again = 0; b = 0; s = 0; owner = 0; nreads = 0;
                for (b : 0 .. NB - 1) { mapped[b] = 0 }; b = 0 };
end_dead:
       atomic { rrespawn[r] -> rrespawn[r] = false; rkill[r] = false; inc++ };
       goto restart
    :: rstop[r] ->
       /* SIGSTOP, never continued: the slot keeps its announcement for ever */
end_stopped:
       false
    fi
  }
}

/* ============================== Writer ============================== */
/* slot_holds(c, slots[i], b, liveness), setting held */
#define SLOT_HOLDS(i) \
  atomic { \
    w = reading[i];                                    /* [P6b] acquire */ \
    if \
    :: w == 0 || BUF(w) != b -> w = 0 \
    :: w != 0 && BUF(w) == b && !liveness -> held = true; w = 0 \
    :: w != 0 && BUF(w) == b && liveness \
    fi \
  }; \
  if \
  :: w != 0 -> \
     OWNER_CHECK(i) \
     if \
     :: w != 0 -> FREE_DEAD(i) \
     :: else \
     fi \
  :: else \
  fi

#ifndef OLD_CLEAR
/* pid (acquire); 0: held; alive = pid > 0 ? process_alive(pid, start_token)
   : busy_holder_alive(pid); alive: held */
#define OWNER_CHECK(i) \
     atomic { p = slot_pid[i]; if :: p == 0 || RALIVE(p) || BUSY_LIVE(p) -> held = true; w = 0; p = 0 \
                                  :: else fi };
/* free_dead_slot(s, pid) (pid a dead owner or a dead holder's mark): CAS pid -> busy_mark(),
   reading = 0, pid = 0; fails: held */
#define FREE_DEAD(i) \
        atomic { if :: slot_pid[i] == p -> slot_pid[i] = MARK(me) \
                    :: else -> held = true; p = 0 fi; w = 0 }; \
        if \
        :: p != 0 -> \
           atomic { reading[i] = 0 };                   /* [P5'] release */ \
           atomic { slot_pid[i] = 0; p = 0 }            /* pid.store(0, release) */ \
        :: else \
        fi
#else
/* before 76d122b: pid, process_alive; CAS reading w -> 0, CAS pid p -> 0 */
#define OWNER_CHECK(i) \
     atomic { p = slot_pid[i]; if :: RALIVE(p) -> held = true; w = 0; p = 0 :: else fi };
#define FREE_DEAD(i) \
        atomic { if :: reading[i] == w -> reading[i] = 0 \
                    :: else -> held = true; p = 0 fi; w = 0 }; \
        atomic { if :: p != 0 && slot_pid[i] == p -> slot_pid[i] = 0 :: else fi; p = 0 }
#endif

proctype Writer() {
  byte me, cur, g, b, k, round, w;
  short owner, p;
  bool held, liveness, last;
  byte inc = 0;
restart:
  me = WPID(inc);
  {
    /* Writer::Writer: claim the writer role through the busy mark -me */
    do
    :: atomic {
         owner = writer_pid;                          /* writer_pid.load(acquire) */
         assert(owner <= 0 || owner == me || !WALIVE(owner));  /* environment: no live owner */
         if
         :: BUSY_LIVE(owner) -> owner = 0; goto wrefused /* live: "already has a live writer" */
         :: else
         fi
       };
       atomic {                                       /* CAS writer_pid owner -> busy_mark() */
         if
         :: writer_pid == owner -> writer_pid = MARK(me); owner = 0; break
         :: else -> owner = 0                         /* changed under us: look again */
         fi
       }
    od;
    atomic { writer_pid = me };                       /* writer_start_token; writer_pid.store(release) */
    do
    :: /* Writer::publish() */
       atomic {
         wpub = true; assert(writer_pid == me);         /* role check */
         cur = WLOAD_CURRENT;                           /* current (acquire) */
         if
         :: GEN(cur) >= MAXG -> wpub = false; cur = 0; break   /* model bound */
         :: else -> g = GEN(cur) + 1
         fi
       };
       /* acquire_free_buffer(c, current_buffer(cur), cur != 0) */
       do
       :: /* one round */
          /* [P6] seq_cst fence; last_round = monotonic_ns() >= deadline: time passes, the
             deadline may have passed at any round, and has after ROUNDS rounds at the latest;
             check_liveness = round % 16 == 1 || last_round */
          atomic {
#ifndef NO_FENCE_P6
            FLUSH_W;
#endif
            if
            :: round + 1 >= ROUNDS -> last = true
            :: round + 1 < ROUNDS -> last = true
            :: round + 1 < ROUNDS -> last = false
            fi;
            liveness = (round == 1 || last); k = 1
          };
          do
          :: atomic { k > NB -> k = 0; break }
          :: atomic { k <= NB && cur != 0 && (BUF(cur) + k) % NB == BUF(cur) -> k++ }
          :: atomic { k <= NB && !(cur != 0 && (BUF(cur) + k) % NB == BUF(cur)) ->
                      b = (BUF(cur) + k) % NB; held = false };
#ifndef NO_REUSE_WAIT
             SLOT_HOLDS(0);
             if :: !held -> SLOT_HOLDS(1) :: else fi;
             if :: !held -> SLOT_HOLDS(2) :: else fi;
#endif
             atomic {
               if
               :: !held -> k = 0; liveness = false; last = false; round = 0; goto found
               :: else -> k++; held = false; b = 0
               fi
             }
          od;
          /* if (last_round) return -1 */
          atomic {
            if
            :: last -> goto skipped
            :: else -> round++
            fi
          }
       od;
skipped:
#ifdef SKIP_IS_PROGRESS
progress_skipped:
#endif
       atomic { publish_skipped = 1; wpub = false;       /* publish_skipped.fetch_add; return 0 */
                round = 0; liveness = false; last = false; cur = 0; g = 0 };
       goto next;
found:
       /* grow if needed: a new incarnation, BufferDesc::seq + 1 (relaxed) */
       if
       :: atomic { growths < GROWS -> growths++; seq[b]++ }
       :: skip
       fi;
       /* serialize_into: the buffer is being written */
       atomic {
         assert(rbuf[0] != b + 1 && rbuf[1] != b + 1 && rbuf[2] != b + 1);   /* (1) */
         bstate[b] = WRITING
       };
       atomic { generation[b] = g; bstate[b] = READABLE };   /* d.generation, d.size, ... */
       /* [P1] release store of current */
progress_published:
       atomic {
         assert(g > maxpub);                                  /* (4) */
         maxpub = g;
         if :: wsb_full -> FLUSH_W :: else fi;
         wsb_full = true; wsb_val = WORD(g, b);
         wpub = false;                                  /* publishes.fetch_add ...; return */
         cur = 0; g = 0; b = 0
       };
next:  skip
    od;
end_idle:
    false;                                            /* done: the model publishes MAXG generations */
wrefused:
#ifdef CHECK_HANDOVER
    assert(false);                                    /* writer_pid busy for good (no live writer exists here) */
#endif
end_wrefused:
    false                                             /* Writer::Writer threw; no writer from now on */
  } unless {
    wkill ->
    atomic { FLUSH_W; wpub = false; wzombie = true;
             cur = 0; g = 0; b = 0; k = 0; round = 0; w = 0; p = 0; held = false; liveness = false;
             last = false; owner = 0 };
end_wdead:
    atomic { wrespawn -> wrespawn = false; wkill = false; inc++ };
    goto restart
  }
}

/* ============================== Supervisor ============================== */
#if defined(RESPAWN_EARLY)
#define RESPAWN(r)  skip
#define EARLY(r)    rrespawn[r] = true; rpid_cur[r] = RPID(r, rpid_inc[r]); ralive[r] = true
#elif defined(RESPAWN_READERS)
#define RESPAWN(r)  atomic { rpid_cur[r] = RPID(r, rpid_inc[r]); ralive[r] = true; rrespawn[r] = true }
#define EARLY(r)    skip
#else
#define RESPAWN(r)  skip    /* a dead reader is not replaced (keeps the state space small) */
#define EARLY(r)    skip
#endif
byte rpid_inc[NR];

#ifndef OLD_CLEAR
/* Store::clear_reader_slot(r, p) = free_dead_slot(s, p) || free_dead_slot(s, -p) (the reaped
   reader owned the slot, or died inside its claim): CAS pid -> busy_mark(), [P5'] reading = 0
   (release), pid = 0 (release). Two CASes, two steps. */
#if defined(ANON_BUSY) || defined(NO_CLEAR_BUSY)
#define CLEAR_CAS2(r)   p = 0
#else
#define CLEAR_CAS2(r)   if :: slot_pid[r] == -p -> slot_pid[r] = MARK(SPID) :: else -> p = 0 fi
#endif
#define CLEAR_READER_SLOT(r) \
     atomic { if :: slot_pid[r] == p -> slot_pid[r] = MARK(SPID); q = 1 :: else fi }; \
     atomic { if :: q == 0 -> CLEAR_CAS2(r) :: else -> q = 0 fi }; \
     if \
     :: p != 0 -> \
        reading[r] = 0; \
        atomic { slot_pid[r] = 0; p = 0 } \
     :: else \
     fi
#else
/* before 76d122b: load pid; if p: reading = 0 [P5']; CAS pid p -> 0 */
#define CLEAR_READER_SLOT(r) \
     if \
     :: slot_pid[r] == p -> \
        reading[r] = 0; \
        atomic { if :: slot_pid[r] == p -> slot_pid[r] = 0 :: else fi } \
     :: else \
     fi; \
     p = 0
#endif

#define REAP_READER(r) \
  :: atomic { rzombie[r] -> rzombie[r] = false; ralive[r] = false; p = rpid_cur[r]; \
              rpid_inc[r]++; EARLY(r) }; \
     CLEAR_READER_SLOT(r); \
     RESPAWN(r)

active proctype Supervisor() {
  byte p, q;
end:
  do
  REAP_READER(0)
  REAP_READER(1)
  REAP_READER(2)
  :: atomic { wzombie -> wzombie = false; walive = false; p = wpid_cur };
     /* Store::clear_writer(p): CAS writer_pid p -> 0, else CAS -p -> 0 (died claiming the role) */
     atomic { if :: writer_pid == p -> writer_pid = 0; q = 1 :: else fi };
#if !defined(ANON_BUSY) && !defined(NO_CLEAR_BUSY)
     atomic { if :: q == 0 && writer_pid == -p -> writer_pid = 0 :: else fi; q = 0 };
#else
     q = 0;
#endif
     atomic { wpid_cur = WPID(1 + p - 100); walive = true; wrespawn = true }  /* fork a new writer */
  od
}

/* ============================== Killer ============================== */
#define KILL_READER(r) \
  :: atomic { rk > 0 && ralive[r] && !rkill[r] && !rstop[r] && !rzombie[r] && !rrespawn[r] -> \
              rk--; rkill[r] = true }
#define STOP_READER(r) \
  :: atomic { st > 0 && ralive[r] && !rkill[r] && !rstop[r] && !rzombie[r] && !rrespawn[r] -> \
              st--; rstop[r] = true }

active proctype Killer() {
  byte rk = RDEATHS, wk = WDEATHS, st = RSTOPS;
  do
  /* Readers run the same code; the killer kills reader 0 and stops readers 1 and 2 (by
     symmetry this stands for any choice of victims, up to the writer's slot scan order). */
  KILL_READER(0)
  STOP_READER(1)
  STOP_READER(2)
  :: atomic { wk > 0 && walive && !wkill && !wzombie && !wrespawn -> wk--; wkill = true }
  :: break
  od;
  killer_done = true
}

init {
  byte b;
  atomic {
    for (b : 0 .. NB - 1) { seq[b] = 1 };            /* Store::create: incarnation 1 */
    for (b : 0 .. RUN_READERS - 1) { rpid_cur[b] = RPID(b, 0); ralive[b] = true };
    wpid_cur = WPID(0); walive = true;
    run Writer();
    for (b : 0 .. RUN_READERS - 1) { run Reader(b) }
  }
}

/* (3) Each publish attempt is bounded by construction (at most ROUNDS rounds of at most NB
   candidates and NR slots, no blocking statement inside publish: a writer blocked there would
   be an invalid end state of the safety runs), as the code's loop is by its deadline.  What is
   checked is that no infinite run avoids the progress labels (pan -l, compiled with -DNP):
   every other process is finite (bounded reads, deaths, stops), so such a run is the writer
   retrying for ever.  progress_published marks a publish; with -DSKIP_IS_PROGRESS a counted
   skip counts too (publish-or-skip: run.sh progress_publish_or_skip*).  Without
   SKIP_IS_PROGRESS, pan -l finds an unfair cycle (a live reader never scheduled to leave its
   read makes every attempt skip, as a reader slower than the reclaim timeout does); with weak
   fairness (pan -l -f, run.sh progress_dead_reader_fair) a dead reader alone never keeps the
   writer from publishing.  The LTL formulas below are kept for pan -a -f -N name; run.sh
   does not run them. */
/* (3) the writer never waits for ever: every publish() call ends (publishes or skips) */
ltl publish_ends { [] (wpub -> <> !wpub) }
/* (3') with a spare buffer (stopped readers <= NB - 2) and dead readers reaped, the writer
   publishes every generation */
ltl publishes_all { <> (current >= WORD(MAXG, 0)) }
