//! Which GBNF repetitions may become one llguidance lexeme without changing the language.
//!
//! The translation is character-level (every literal character and class one lexeme), which is
//! exact but costs an Earley step per character. A repetition `x*` (`x+`, `x{m,n}`) of a
//! regular `x` is far cheaper as one lexeme, but llguidance's lexer takes the longest match, so
//! the repetition becomes one lexeme only where that cannot change which strings are accepted:
//!
//! 1. `x` is prefix-free and never empty (no string of `x` is a proper prefix of another), so a
//!    lexeme of whole `x`s can only be extended by a character in FIRST(x);
//! 2. no character that can follow the repetition is in FIRST(x), so stopping the repetition
//!    where the grammar needs it is exactly where the lexeme stops;
//! 3. no other character position of the grammar that can be active at the repetition's start
//!    (after the same input) accepts a character of FIRST(x), so the lexer never has to choose
//!    between this lexeme and a shorter competing one.
//!
//! "Can be active at the same place" is over-approximated: two positions are co-active if
//! their characters overlap and the positions before them are the same or co-active (or both
//! are the start). The approximation only ever keeps more repetitions character-level, never
//! fewer. Grammars too large for the analysis (see the limits below) stay character-level.

use super::Node;
use std::collections::{HashMap, HashSet};

/// Analysis limits: past these the grammar stays character-level (exact, slower).
const MAX_ATOMS: usize = 4096;
const MAX_COACTIVE_WORK: usize = 20_000_000;
/// The most character positions a lifted repetition's body may have (rules inlined).
const MAX_LEXEME_ATOMS: usize = 512;

/// A set of Unicode scalar values: sorted, disjoint ranges.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct CharSet(Vec<(u32, u32)>);

impl CharSet {
    pub(super) fn class(negated: bool, ranges: &[(char, char)]) -> CharSet {
        let mut set = CharSet::default();
        for &(lo, hi) in ranges {
            set.add(lo as u32, hi as u32);
        }
        if negated { set.complement() } else { set }
    }

    fn single(c: char) -> CharSet {
        CharSet(vec![(c as u32, c as u32)])
    }

    fn any() -> CharSet {
        CharSet(vec![(0, 0x10FFFF)])
    }

    fn add(&mut self, lo: u32, hi: u32) {
        self.0.push((lo, hi));
        self.0.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.0.len());
        for &(l, h) in &self.0 {
            match merged.last_mut() {
                Some(last) if l <= last.1.saturating_add(1) => last.1 = last.1.max(h),
                _ => merged.push((l, h)),
            }
        }
        self.0 = merged;
    }

    fn union(&mut self, other: &CharSet) {
        for &(l, h) in &other.0 {
            self.add(l, h);
        }
    }

    fn complement(&self) -> CharSet {
        let mut out = Vec::new();
        let mut next = 0u32;
        for &(l, h) in &self.0 {
            if l > next {
                out.push((next, l - 1));
            }
            next = h.saturating_add(1);
        }
        if next <= 0x10FFFF {
            out.push((next, 0x10FFFF));
        }
        CharSet(out)
    }

    fn intersects(&self, other: &CharSet) -> bool {
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            if a.1 < b.0 {
                i += 1;
            } else if b.1 < a.0 {
                j += 1;
            } else {
                return true;
            }
        }
        false
    }
}

/// A set of atom ids (plus the start/end marker at index `n_atoms`).
#[derive(Clone, Debug, PartialEq)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n / 64 + 1])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// `self |= other`; true if `self` changed.
    fn or(&mut self, other: &Bits) -> bool {
        let mut changed = false;
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            let n = *a | *b;
            changed |= n != *a;
            *a = n;
        }
        changed
    }
    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

fn key(node: &Node) -> usize {
    node as *const Node as usize
}

/// The character positions ("atoms") of a grammar: each literal character, class and `.`.
struct Atoms {
    chars: Vec<CharSet>,
    /// (node address, index of the character in a literal) → atom id.
    ids: HashMap<(usize, usize), usize>,
}

struct Analysis<'a> {
    bodies: &'a [&'a Node],
    index: &'a HashMap<&'a str, usize>,
    atoms: Atoms,
    /// Marker bit: the start (in PRE sets) or the end (in FOLLOW sets) of the input.
    edge: usize,
    nullable: Vec<bool>,
    first: Vec<Bits>,
    last: Vec<Bits>,
    /// How many references each rule has in the whole grammar.
    uses: Vec<usize>,
}

/// The repetitions (by node address) that may be one lexeme.
pub(super) fn liftable(
    bodies: &[&Node],
    index: &HashMap<&str, usize>,
    root: usize,
) -> HashSet<usize> {
    let mut atoms = Atoms {
        chars: Vec::new(),
        ids: HashMap::new(),
    };
    for body in bodies {
        collect_atoms(body, &mut atoms);
        if atoms.chars.len() > MAX_ATOMS {
            return HashSet::new();
        }
    }
    let n = atoms.chars.len();
    let mut a = Analysis {
        bodies,
        index,
        atoms,
        edge: n,
        nullable: vec![false; bodies.len()],
        first: vec![Bits::new(n + 1); bodies.len()],
        last: vec![Bits::new(n + 1); bodies.len()],
        uses: vec![0; bodies.len()],
    };
    for body in bodies {
        count_uses(body, index, &mut a.uses);
    }
    a.rule_tables();

    // PRE: the atoms that can come right before each atom (or the start).
    let mut pre = vec![Bits::new(n + 1); n];
    let mut entry = vec![Bits::new(n + 1); bodies.len()];
    entry[root].set(a.edge);
    loop {
        let mut changed = false;
        for r in 0..bodies.len() {
            let before = entry[r].clone();
            let mut new_entries = Vec::new();
            a.forward(bodies[r], &before, &mut pre, &mut new_entries);
            for (rr, set) in new_entries {
                changed |= entry[rr].or(&set);
            }
        }
        if !changed {
            break;
        }
    }
    // FOLLOW of every repetition: the atoms that can come right after it (or the end).
    let mut follow: HashMap<usize, Bits> = HashMap::new();
    let mut exit = vec![Bits::new(n + 1); bodies.len()];
    exit[root].set(a.edge);
    loop {
        let mut changed = false;
        for r in 0..bodies.len() {
            let after = exit[r].clone();
            let mut new_exits = Vec::new();
            a.backward(bodies[r], &after, &mut follow, &mut new_exits);
            for (rr, set) in new_exits {
                changed |= exit[rr].or(&set);
            }
        }
        if !changed {
            break;
        }
    }
    let Some(coactive) = a.coactive(&pre) else {
        return HashSet::new();
    };

    let mut out = HashSet::new();
    for body in bodies {
        a.decide(body, &follow, &coactive, &mut out);
    }
    out
}

fn count_uses(node: &Node, index: &HashMap<&str, usize>, uses: &mut [usize]) {
    match node {
        Node::Ref { name, .. } => uses[index[name.as_str()]] += 1,
        Node::Seq(items) | Node::Alt(items) => {
            items.iter().for_each(|i| count_uses(i, index, uses))
        }
        Node::Repeat { node, .. } => count_uses(node, index, uses),
        _ => {}
    }
}

fn collect_atoms(node: &Node, atoms: &mut Atoms) {
    match node {
        Node::Literal(text) => {
            for (i, &c) in text.iter().enumerate() {
                atoms.ids.insert((key(node), i), atoms.chars.len());
                atoms.chars.push(CharSet::single(c));
            }
        }
        Node::Class { negated, ranges } => {
            atoms.ids.insert((key(node), 0), atoms.chars.len());
            atoms.chars.push(CharSet::class(*negated, ranges));
        }
        Node::Any => {
            atoms.ids.insert((key(node), 0), atoms.chars.len());
            atoms.chars.push(CharSet::any());
        }
        Node::Seq(items) | Node::Alt(items) => items.iter().for_each(|i| collect_atoms(i, atoms)),
        Node::Repeat { node: inner, .. } => collect_atoms(inner, atoms),
        Node::Empty | Node::Ref { .. } => {}
    }
}

impl Analysis<'_> {
    fn atom(&self, node: &Node, i: usize) -> usize {
        self.atoms.ids[&(key(node), i)]
    }

    fn rule_of(&self, name: &str) -> usize {
        self.index[name]
    }

    fn empty(&self) -> Bits {
        Bits::new(self.edge + 1)
    }

    fn single(&self, i: usize) -> Bits {
        let mut b = self.empty();
        b.set(i);
        b
    }

    /// Nullable, FIRST and LAST of every rule (a fixpoint over the rules).
    fn rule_tables(&mut self) {
        loop {
            let mut changed = false;
            for r in 0..self.bodies.len() {
                let body = self.bodies[r];
                let nullable = self.is_nullable(body);
                let first = self.first_of(body);
                let last = self.last_of(body);
                if nullable && !self.nullable[r] {
                    self.nullable[r] = true;
                    changed = true;
                }
                changed |= self.first[r].or(&first);
                changed |= self.last[r].or(&last);
            }
            if !changed {
                break;
            }
        }
    }

    fn is_nullable(&self, node: &Node) -> bool {
        match node {
            Node::Empty => true,
            Node::Literal(t) => t.is_empty(),
            Node::Class { .. } | Node::Any => false,
            Node::Ref { name, .. } => self.nullable[self.rule_of(name)],
            Node::Seq(items) => items.iter().all(|i| self.is_nullable(i)),
            Node::Alt(alts) => alts.iter().any(|i| self.is_nullable(i)),
            Node::Repeat { node, min, max } => {
                *min == 0 || *max == Some(0) || self.is_nullable(node)
            }
        }
    }

    fn first_of(&self, node: &Node) -> Bits {
        match node {
            Node::Empty => self.empty(),
            Node::Literal(t) if t.is_empty() => self.empty(),
            Node::Literal(_) | Node::Class { .. } | Node::Any => self.single(self.atom(node, 0)),
            Node::Ref { name, .. } => self.first[self.rule_of(name)].clone(),
            Node::Seq(items) => {
                let mut out = self.empty();
                for i in items {
                    out.or(&self.first_of(i));
                    if !self.is_nullable(i) {
                        break;
                    }
                }
                out
            }
            Node::Alt(alts) => {
                let mut out = self.empty();
                alts.iter().for_each(|a| {
                    out.or(&self.first_of(a));
                });
                out
            }
            Node::Repeat { max: Some(0), .. } => self.empty(),
            Node::Repeat { node, .. } => self.first_of(node),
        }
    }

    fn last_of(&self, node: &Node) -> Bits {
        match node {
            Node::Empty => self.empty(),
            Node::Literal(t) if t.is_empty() => self.empty(),
            Node::Literal(t) => self.single(self.atom(node, t.len() - 1)),
            Node::Class { .. } | Node::Any => self.single(self.atom(node, 0)),
            Node::Ref { name, .. } => self.last[self.rule_of(name)].clone(),
            Node::Seq(items) => {
                let mut out = self.empty();
                for i in items.iter().rev() {
                    out.or(&self.last_of(i));
                    if !self.is_nullable(i) {
                        break;
                    }
                }
                out
            }
            Node::Alt(alts) => {
                let mut out = self.empty();
                alts.iter().for_each(|a| {
                    out.or(&self.last_of(a));
                });
                out
            }
            Node::Repeat { max: Some(0), .. } => self.empty(),
            Node::Repeat { node, .. } => self.last_of(node),
        }
    }

    /// Record PRE for the atoms of `node` entered after `before`; returns what can be last
    /// after it. Rules entered are reported in `entries`.
    fn forward(
        &self,
        node: &Node,
        before: &Bits,
        pre: &mut [Bits],
        entries: &mut Vec<(usize, Bits)>,
    ) -> Bits {
        match node {
            Node::Empty => before.clone(),
            Node::Literal(t) => {
                let mut cur = before.clone();
                for i in 0..t.len() {
                    let id = self.atom(node, i);
                    pre[id].or(&cur);
                    cur = self.single(id);
                }
                cur
            }
            Node::Class { .. } | Node::Any => {
                let id = self.atom(node, 0);
                pre[id].or(before);
                self.single(id)
            }
            Node::Ref { name, .. } => {
                let r = self.rule_of(name);
                entries.push((r, before.clone()));
                let mut out = self.last[r].clone();
                if self.nullable[r] {
                    out.or(before);
                }
                out
            }
            Node::Seq(items) => {
                let mut cur = before.clone();
                for i in items {
                    cur = self.forward(i, &cur, pre, entries);
                }
                cur
            }
            Node::Alt(alts) => {
                let mut out = self.empty();
                for alt in alts {
                    out.or(&self.forward(alt, before, pre, entries));
                }
                out
            }
            Node::Repeat { max: Some(0), .. } => before.clone(),
            Node::Repeat {
                node: inner,
                min,
                max,
            } => {
                let mut inner_before = before.clone();
                if *max != Some(1) {
                    inner_before.or(&self.last_of(inner));
                }
                let mut out = self.forward(inner, &inner_before, pre, entries);
                if *min == 0 {
                    out.or(before);
                }
                out
            }
        }
    }

    /// Record FOLLOW for the repetitions in `node` followed by `after`; returns what can be
    /// first in it (with `after` when it can be empty). Rules left are reported in `exits`.
    fn backward(
        &self,
        node: &Node,
        after: &Bits,
        follow: &mut HashMap<usize, Bits>,
        exits: &mut Vec<(usize, Bits)>,
    ) -> Bits {
        match node {
            Node::Empty => after.clone(),
            Node::Literal(t) if t.is_empty() => after.clone(),
            Node::Literal(_) | Node::Class { .. } | Node::Any => self.single(self.atom(node, 0)),
            Node::Ref { name, .. } => {
                let r = self.rule_of(name);
                exits.push((r, after.clone()));
                let mut out = self.first[r].clone();
                if self.nullable[r] {
                    out.or(after);
                }
                out
            }
            Node::Seq(items) => {
                let mut cur = after.clone();
                for i in items.iter().rev() {
                    cur = self.backward(i, &cur, follow, exits);
                }
                cur
            }
            Node::Alt(alts) => {
                let mut out = self.empty();
                for alt in alts {
                    out.or(&self.backward(alt, after, follow, exits));
                }
                out
            }
            Node::Repeat { max: Some(0), .. } => after.clone(),
            Node::Repeat {
                node: inner,
                min,
                max,
            } => {
                follow
                    .entry(key(node))
                    .or_insert_with(|| self.empty())
                    .or(after);
                let mut inner_after = after.clone();
                if *max != Some(1) {
                    inner_after.or(&self.first_of(inner));
                }
                let mut out = self.backward(inner, &inner_after, follow, exits);
                if *min == 0 {
                    out.or(after);
                }
                out
            }
        }
    }

    /// Pairs of atoms that may read the same character at the same input position (see the
    /// module comment), as a symmetric bit matrix; `None` past the work limit.
    fn coactive(&self, pre: &[Bits]) -> Option<Vec<Bits>> {
        let n = self.edge;
        // SUCC[p]: atoms that can follow atom p (p = n: the start).
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
        for (a, set) in pre.iter().enumerate() {
            for p in set.ones() {
                succ[p].push(a);
            }
        }
        let mut c = vec![Bits::new(n); n];
        let mut work = Vec::new();
        let mut steps = 0usize;
        let add = |a: usize, b: usize, c: &mut Vec<Bits>, work: &mut Vec<(usize, usize)>| {
            if !c[a].get(b) {
                c[a].set(b);
                c[b].set(a);
                work.push((a, b));
            }
        };
        // Positions after the same atom (or both at the start).
        for s in &succ {
            steps += s.len() * s.len();
            if steps > MAX_COACTIVE_WORK {
                return None;
            }
            for &a in s {
                for &b in s {
                    if a <= b && self.atoms.chars[a].intersects(&self.atoms.chars[b]) {
                        add(a, b, &mut c, &mut work);
                    }
                }
            }
        }
        // Positions after co-active ones.
        while let Some((p, q)) = work.pop() {
            if p == q {
                continue;
            }
            steps += succ[p].len() * succ[q].len();
            if steps > MAX_COACTIVE_WORK {
                return None;
            }
            for &a in &succ[p] {
                for &b in &succ[q] {
                    if self.atoms.chars[a].intersects(&self.atoms.chars[b]) {
                        let (x, y) = if a <= b { (a, b) } else { (b, a) };
                        add(x, y, &mut c, &mut work);
                    }
                }
            }
        }
        Some(c)
    }

    fn chars_of(&self, set: &Bits) -> CharSet {
        let mut out = CharSet::default();
        for i in set.ones() {
            if i < self.edge {
                out.union(&self.atoms.chars[i]);
            }
        }
        out
    }

    /// Is `node` never empty and prefix-free, with at most `budget` atoms (rules inlined)?
    fn prefix_free(&self, node: &Node, depth: usize, budget: &mut usize) -> bool {
        if depth > 16 {
            return false;
        }
        match node {
            Node::Empty => false,
            Node::Literal(t) => {
                *budget = budget.saturating_sub(t.len());
                !t.is_empty() && *budget > 0
            }
            Node::Class { .. } | Node::Any => {
                *budget = budget.saturating_sub(1);
                *budget > 0
            }
            // A rule used only here: its character positions belong to this repetition alone
            // (a rule used elsewhere too shares them with places that may compete).
            Node::Ref { name, .. } => {
                let r = self.rule_of(name);
                self.uses[r] == 1 && self.prefix_free(self.bodies[r], depth + 1, budget)
            }
            Node::Seq(items) => {
                !items.is_empty() && items.iter().all(|i| self.prefix_free(i, depth + 1, budget))
            }
            Node::Alt(alts) => {
                if !alts.iter().all(|a| self.prefix_free(a, depth + 1, budget)) {
                    return false;
                }
                let firsts: Vec<CharSet> = alts
                    .iter()
                    .map(|a| self.chars_of(&self.first_of(a)))
                    .collect();
                firsts
                    .iter()
                    .enumerate()
                    .all(|(i, f)| firsts[i + 1..].iter().all(|g| !f.intersects(g)))
            }
            Node::Repeat { node, min, max } => {
                *min >= 1 && *max == Some(*min) && self.prefix_free(node, depth + 1, budget)
            }
        }
    }

    fn decide(
        &self,
        node: &Node,
        follow: &HashMap<usize, Bits>,
        coactive: &[Bits],
        out: &mut HashSet<usize>,
    ) {
        match node {
            Node::Seq(items) | Node::Alt(items) => {
                items
                    .iter()
                    .for_each(|i| self.decide(i, follow, coactive, out));
            }
            Node::Repeat {
                node: inner, max, ..
            } => {
                let candidate = *max != Some(0) && *max != Some(1);
                if candidate && self.lifts(node, inner, follow, coactive) {
                    out.insert(key(node));
                } else {
                    self.decide(inner, follow, coactive, out);
                }
            }
            _ => {}
        }
    }

    fn lifts(
        &self,
        rep: &Node,
        inner: &Node,
        follow: &HashMap<usize, Bits>,
        coactive: &[Bits],
    ) -> bool {
        let mut budget = MAX_LEXEME_ATOMS;
        if !self.prefix_free(inner, 0, &mut budget) {
            return false;
        }
        let first = self.first_of(inner);
        let first_chars = self.chars_of(&first);
        // 2. Nothing after the repetition starts with a character that would extend it.
        if let Some(f) = follow.get(&key(rep))
            && self.chars_of(f).intersects(&first_chars)
        {
            return false;
        }
        // 3. Nothing else active where it starts reads one of its first characters. Positions
        // inside the repetition itself do not compete: `x` splits a string into units in one
        // way only, so they are at the same unit boundaries as the lexeme.
        let mut own = self.empty();
        self.own_atoms(inner, &mut own);
        for a in first.ones().filter(|&a| a < self.edge) {
            if coactive[a].ones().any(|b| b < self.edge && !own.get(b)) {
                return false;
            }
        }
        true
    }

    /// The atoms of `node`, rules it uses included (only rules used once get here).
    fn own_atoms(&self, node: &Node, out: &mut Bits) {
        match node {
            Node::Literal(t) => (0..t.len()).for_each(|i| out.set(self.atom(node, i))),
            Node::Class { .. } | Node::Any => out.set(self.atom(node, 0)),
            Node::Ref { name, .. } => self.own_atoms(self.bodies[self.rule_of(name)], out),
            Node::Seq(items) | Node::Alt(items) => {
                items.iter().for_each(|i| self.own_atoms(i, out))
            }
            Node::Repeat { node, .. } => self.own_atoms(node, out),
            Node::Empty => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_sets() {
        let lower = CharSet::class(false, &[('a', 'z')]);
        let not_lower = CharSet::class(true, &[('a', 'z')]);
        assert!(!lower.intersects(&not_lower));
        assert!(not_lower.intersects(&CharSet::single('A')));
        assert!(not_lower.intersects(&CharSet::single('\u{10FFFF}')));
        let mut u = CharSet::class(false, &[('a', 'c'), ('d', 'f'), ('x', 'x')]);
        u.union(&CharSet::single('g'));
        assert_eq!(
            u,
            CharSet(vec![('a' as u32, 'g' as u32), ('x' as u32, 'x' as u32)])
        );
        assert_eq!(CharSet::any().complement(), CharSet::default());
    }
}
