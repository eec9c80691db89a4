# tools/demo-task.awk — the demo's multiple-choice task (tools/demo.sh, step 11), for `tiertrain eval --task`:
# which continuation is real? The context and the real continuation from a held-out UN sentence, the other from
# held-out general text (both files' every k-th non-blank line: tokenize --val-frac's documents)
function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s); return s }
function cut(s, at,    i) { i = index(substr(s, at), " "); return i ? at + i - 1 : 0 }
FNR == 1 { f++; doc = 0 }
f == 1 && NF && ++doc % 20 == 0 && length($0) >= 100 { un[nu++] = $0 }
f == 2 && NF && ++doc % 50 == 0 && length($0) >= 100 { gen[ng++] = $0 }
END {
    for (k = 0; k < nu && k < ng; k++) { # labels alternate: half the real continuations come first
        s = un[k]; o = gen[k]
        c = cut(s, 40); e = cut(s, c + 40); oc = cut(o, 40); oe = cut(o, oc + 40)
        if (!c || !e || !oc || !oe) continue
        ctx = substr(s, 1, c); real = substr(s, c + 1, e - c - 1); fake = substr(o, oc + 1, oe - oc - 1)
        if (m++ % 2) printf "{\"context\": \"%s\", \"choices\": [\"%s\", \"%s\"], \"label\": 0}\n", esc(ctx), esc(real), esc(fake)
        else printf "{\"context\": \"%s\", \"choices\": [\"%s\", \"%s\"], \"label\": 1}\n", esc(ctx), esc(fake), esc(real)
    }
}
