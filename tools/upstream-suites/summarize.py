#!/usr/bin/env python3
"""Summarize a Ginkgo v2 verbose (-ginkgo.v -ginkgo.no-color) log.

usage: summarize.py LOG [--details] [--json OUT]
Prints counts and failing specs (name, spec location, failure location, first lines of message).
"""
import json
import re
import sys

ANSI = re.compile(r'\x1b\[[0-9;]*m')
SEP = '------------------------------'


def parse(path):
    lines = [ANSI.sub('', l.rstrip('\n')) for l in open(path, errors='replace')]
    res = {'ran': None, 'summary': None, 'failures': []}
    rans, sums = [], []
    for l in lines:
        m = re.match(r'^Ran (\d+) of (\d+) Specs', l)
        if m:
            rans.append((int(m.group(1)), int(m.group(2))))
            res['ran'] = l.strip()
        m = re.match(r'^(SUCCESS|FAIL)!.*?-- (\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped', l)
        if m:
            sums.append([int(x) for x in m.groups()[1:]])
            res['summary'] = l.strip()
    if len(rans) > 1:   # sharded run: aggregate
        res['ran'] = 'Ran %d of %d Specs (%d ginkgo runs)' % (sum(r[0] for r in rans), rans[0][1], len(rans))
    if len(sums) > 1:
        t = [sum(x[i] for x in sums) for i in range(4)]
        t[3] = rans[0][1] - sum(r[0] for r in rans) if rans else t[3]
        res['summary'] = '%s! -- %d Passed | %d Failed | %d Pending | %d Skipped (aggregated over %d ginkgo runs)' % (
            'FAIL' if t[1] else 'SUCCESS', t[0], t[1], t[2], t[3], len(sums))
    i = 0
    n = len(lines)
    while i < n:
        m = re.match(r'^• \[(FAILED|PANICKED|TIMEDOUT|INTERRUPTED)\]', lines[i])
        if m:
            kind = m.group(1)
            name = lines[i + 1].strip() if i + 1 < n else ''
            # spec location = first "/path/file.go:N" line after the name (table entries
            # print their parameters in between)
            k = i + 2
            extra = []
            LOC = r'^\s*(\[\w+\]\s+)?/\S+\.go:\d+\s*$'
            while k < n and k < i + 40 and not re.match(LOC, lines[k]):
                if lines[k].strip():
                    extra.append(lines[k].strip())
                k += 1
            if k < n and k < i + 40:
                locs = []
                while k < n and re.match(LOC, lines[k]):
                    locs.append(lines[k].strip())
                    k += 1
                # "[BeforeEach] /x.go:1" + "[It] /x.go:2" -> spec location is the [It] one
                its = [l for l in locs if l.startswith('[It]')]
                loc = re.sub(r'^\[\w+\]\s+', '', (its or locs)[-1])
                if extra:
                    name = name + ' {' + '; '.join(extra) + '}'
                j = k
            else:
                loc = lines[i + 2].strip() if i + 2 < n else ''
                j = i + 3
            body = []
            while j < n and lines[j] != SEP and not lines[j].startswith('Summarizing '):
                body.append(lines[j])
                j += 1
            text = '\n'.join(body).strip('\n')
            where = re.findall(r'In \[(\w+)\] at: (\S+)', text)
            res['failures'].append({
                'kind': kind,
                'name': re.sub(r'\s*\[(It|BeforeEach|AfterEach|JustBeforeEach)\]\s*', ' ', name).strip(),
                'raw_name': name,
                'spec_location': re.sub(r'^.*/code\.cloudfoundry\.org/', '', loc),
                'failure_locations': [(w, re.sub(r'^.*/code\.cloudfoundry\.org/', '', p)) for w, p in where],
                'message': text,
            })
            i = j
        else:
            i += 1
    return res


def decode_bytes(msg):
    """Gomega prints []byte as decimal lists; decode them to text (shown as b"...")."""
    def rep(m):
        try:
            return 'b' + repr(bytes(int(x) for x in m.group(1).split(',') if x.strip()).decode('utf-8', 'replace'))
        except ValueError:
            return m.group(0)
    return re.sub(r'\[((?:\s*\d{1,3},){19,}\s*\d{1,3})\]', rep, msg, flags=re.S)


def condense(msg):
    """Shorten 'Got stuck at:' blocks (gbytes.Say) to their last lines + 'Waiting for:'."""
    lines = decode_bytes(msg).splitlines()
    out = []
    i = 0
    while i < len(lines):
        l = lines[i]
        if l.strip() == 'Got stuck at:':
            j = i + 1
            block = []
            while j < len(lines) and lines[j].strip() != 'Waiting for:':
                block.append(lines[j])
                j += 1
            block = [b for b in block if b.strip()]
            out.append(l + ' (%d lines, last 4 shown)' % len(block))
            out.extend(block[-4:])
            i = j
            continue
        out.append(l)
        i += 1
    # drop the noisy [It]/[BeforeEach] location repeat lines beyond 30
    return out[:30]


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        sys.exit(2)
    res = parse(args[0])
    print(res['ran'] or 'no "Ran N of M Specs" line (suite aborted/timed out?)')
    print(res['summary'] or 'no pass/fail summary line')
    if res['failures']:
        print('failing specs (%d):' % len(res['failures']))
        for f in res['failures']:
            fl = ', '.join('%s@%s' % w for w in f['failure_locations'])
            print('  [%s] %s  (%s; failed in %s)' % (f['kind'], f['name'], f['spec_location'], fl))
            if '--details' in args:
                for l in condense(f['message']):
                    print('        ' + l[:400])
    if '--json' in args:
        out = args[args.index('--json') + 1]
        json.dump(res, open(out, 'w'), indent=1)


if __name__ == '__main__':
    main()
