#!/usr/bin/perl
# tests/cuda_emu/rewrite.pl — a kernels/cuda/*.cu as C++ for the host compiler
# (tests/cuda_emu/cuda_emu.h says what runs it): kernel launches become calls of
# tt_emu_launch (with the kernel's name), dynamic shared memory a pointer. Usage: rewrite.pl IN.cu > OUT.cc
use strict;
use warnings;
my $in = $ARGV[0] or die "usage: rewrite.pl IN.cu\n";
open(my $f, '<', $in) or die "rewrite.pl: cannot read $in: $!\n";
local $/;
my $src = <$f>;
close $f;
# the kernel's name rides along for messages: TT_EMU_KNAME stringifies it after a macro's (TDISPATCH's)
# parameter is replaced
$src =~ s/\b(\w+)(<\w+>)?\s*<<<(.*?)>>>\s*\(/"tt_emu_launch($1" . ($2 \/\/ "") . ", TT_EMU_KNAME($1) \"" . ($2 \/\/ "") . "\", $3)("/gse;
$src =~ s/extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w+(?:\s+\w+)*)\s+(\w+)\[\];/$1 *$2 = ($1 *)tt_emu_dyn_smem();/g;
die "rewrite.pl: a launch left in $in\n" if $src =~ /<<</;
print "#line 1 \"$in\"\n", $src;
