#!/usr/bin/env python3
"""Group the failing specs of a run-suites.sh log by (heuristic) root cause.

usage: classify.py LOG [--md]
The rules are keyed on the failure message / spec location and were written for the
upstream routing-api cmd suite and gorouter integration suite (routing-release v0.317.0).
Anything no rule matches is listed under "UNCLASSIFIED" - read those by hand.
"""
import os
import re
import sys
import collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import parse, decode_bytes, condense  # noqa: E402

NOISE = re.compile(r'^(Op|URL|Err|Net|Source|Addr|Syscall|Port|Zone|IP|Name|s|Regexp|Args):|^[{}],?$|^\{$')


def short(msg, n=330):
    lines = [l.strip() for l in condense(msg)]
    if 'Waiting for:' in lines:          # gbytes.Say failure: last output line + expectation
        w = lines.index('Waiting for:')
        last = lines[w - 1] if w > 0 else ''
        return ('last output: %s / waiting for: %s' % (last[:260], lines[w + 1] if w + 1 < len(lines) else ''))[:n + 200]
    out = []
    for l in decode_bytes(msg).splitlines():
        l = l.strip()
        if not l or l.startswith('{"log_level') or NOISE.match(l) or l.startswith('In [') \
                or l.startswith('Gomega truncated') or l.startswith('Consider having') \
                or l.startswith('or adjust the parameters') or l.startswith('[FAILED] in'):
            continue
        out.append(l)
    s = ' / '.join(out)
    s = re.sub(r'\| 0x[0-9a-f]+', '', s)
    return s[:n]


RULES = [
    # --- routing-api -------------------------------------------------------------------
    ('RA-statsd', 'routing-api: statsd metrics not emitted',
     lambda f, m: 'stats_test.go' in f['spec_location']),
    ('RA-uaa-tls', 'routing-api: UAA TLS client rejects the test UAA server certificate (CA:TRUE leaf)',
     lambda f, m: 'main_test.go' in f['spec_location'] and 'routing-api' in f['spec_location']
     and ('uaa' in f['name'].lower())),
    ('RA-flag-msgs', 'routing-api: flag-check error text differs (capitalisation)',
     lambda f, m: 'routing-api' in f['spec_location'] and ('No configuration file provided' in m
                                                           or 'No ip address provided' in m)),
    ('RA-rg-overlap', 'routing-api: POST /routing/v1/router_groups rejects port overlap across groups',
     lambda f, m: 'Overlapping values' in m),
    # --- gorouter ----------------------------------------------------------------------
    ('GR-prometheus', 'gorouter: prometheus https /metrics endpoint missing',
     lambda f, m: '/metrics' in m and 'connection refused' in m),
    ('GR-xfcc-rs-hang', 'gorouter: route service never called (XFCC spec blocks forever -> TIMEDOUT)',
     lambda f, m: f['kind'] == 'TIMEDOUT' and 'xfcc' in f['spec_location']),
    ('GR-frontend-tls', 'gorouter: no frontend TLS listener on ssl_port (enable_ssl/tls_pem ignored)',
     lambda f, m: re.search(r'Get "https://[^"]+": dial tcp [^ ]+: connect: connection refused', m) is not None
     or 'HTTPS listener is not supported' in m
     or ('https' in m and 'connection refused' in m)),
    ('GR-route-services', 'gorouter: route services not implemented (route_service_url ignored)',
     lambda f, m: ('rsRequestScheme' in f['name'] and 'to receive something' in m)
     or re.search(r'<int>: 404 / to equal / <int>: (477|418)', short(m)) is not None
     or 'route service' in f['name'].lower() and 'to receive something' in m),
    ('GR-tls-backends', 'gorouter: TLS to backends not implemented (plain HTTP sent to tls_port)',
     lambda f, m: re.search(r'<int>: 400 / to equal / <int>: (101|200|502)', short(m)) is not None
     or 'expected status code 200, got 400' in m
     or ('retry_test' in f['spec_location'])
     or ('large_upload' in f['spec_location'])),
    ('GR-metron', 'gorouter: dropsonde/metron (loggregator v1 UDP) emission not implemented',
     lambda f, m: 'large_request_test.go:72' in m or 'expected metric not found yet' in m
     or 'Dropsonde' in f['name']),
    ('GR-gdpr', 'gorouter: logging.disable_log_forwarded_for / disable_log_source_ip ignored',
     lambda f, m: 'gdpr_test' in f['spec_location']),
    ('GR-http-rewrite', 'gorouter: http_rewrite.responses (remove_headers / add_headers_if_not_present) ignored',
     lambda f, m: 'header_test' in f['spec_location'] and ('Remove Headers' in f['name'] or 'Add Headers' in f['name'])),
    ('GR-html-error', 'gorouter: html_error_template_file ignored',
     lambda f, m: 'HTML error writer' in f['name']),
    ('GR-invalid-config', 'gorouter: invalid config not rejected (expected exit 1 + "Error loading config")',
     lambda f, m: 'config is invalid' in f['name']),
    ('GR-isoseg-log', 'gorouter: retrieved-isolation-segments log has wrong JSON shape',
     lambda f, m: 'IsolationSegments' in f['name']),
    ('GR-keepalive', 'gorouter: backend keep-alive connection state timing',
     lambda f, m: 'backend_keepalive' in f['spec_location']),
]


def classify(res):
    groups = collections.OrderedDict((r[0], (r[1], [])) for r in RULES)
    groups['UNCLASSIFIED'] = ('no rule matched - read by hand', [])
    for f in res['failures']:
        m = f['message']
        for key, _, pred in RULES:
            try:
                if pred(f, m):
                    groups[key][1].append(f)
                    break
            except Exception:
                pass
        else:
            groups['UNCLASSIFIED'][1].append(f)
    return [(k, t, fs) for k, (t, fs) in groups.items() if fs]


def main():
    res = parse(sys.argv[1])
    groups = sorted(classify(res), key=lambda g: -len(g[2]))
    md = '--md' in sys.argv
    print(res['ran'])
    print(res['summary'])
    for key, title, fs in groups:
        print(('\n### %s (%d specs) `%s`\n' if md else '\n== %s (%d specs) [%s]') % (title, len(fs), key))
        for f in fs:
            fl = ', '.join('%s@%s' % w for w in f['failure_locations'])
            if md:
                print('- **%s** — `%s` (failed in %s) [%s]  \n  observed: `%s`' % (
                    f['name'].replace('|', '\\|'), f['spec_location'], fl, f['kind'], short(f['message']).replace('`', "'")))
            else:
                print('  - %s | %s | %s | %s' % (f['name'][:160], f['spec_location'], fl, short(f['message'], 200)))


if __name__ == '__main__':
    main()
