"""What was tried and not shipped: one row per lever, with the effect measured when it was tried.

These are records, not reruns: each was measured once, on this project's machine and data, by
code in git history or by an offline probe on the shipped code that the row describes (the date
says when), and each was dropped for the reason given.
A lever that is tried again moves into its topic's benchmark.
"""

TITLE = "Levers tried and not shipped"
NOTE = (
    "Records, not reruns: each lever was measured once, on this project's machine and data, by code in git history "
    "or by an offline probe on the shipped code that the row describes (the date says when), and dropped for the reason given. A lever tried again moves into its topic's benchmark."
)

# topic, lever, effect measured, why not shipped, when measured
LEVERS = [
    ("separation", "Lite2 instead of Lite1 (PatchCore, 320 px)", "screws 5-fold AUROC 0.945 against 0.963", "worse, and slower", "2026-11-29"),
    (
        "separation",
        "flipped copies of the good images in the bank",
        "screws 0.978 against 0.981, magtiles 0.930 against 0.932; fit 2x slower",
        "no gain for twice the fit",
        "2026-11-29",
    ),
    (
        "separation",
        "letterbox (pad to a square) instead of squashing",
        "magtiles 0.907 against 0.932: a long tile keeps fewer patches",
        "loses 0.025 AUROC",
        "2026-11-29",
    ),
    (
        "separation",
        "image score: max of the map blurred at image resolution, or the grid blurred by 0.5 / 2 patches",
        "screws 0.978 / 0.972 / 0.978 against 0.981 (grid blur 1 patch, shipped)",
        "the shipped sigma is best on screws and ties on magtiles",
        "2026-11-29",
    ),
    (
        "separation",
        "the hybrid's one-class weight floored at 0.25",
        "magtiles 5-fold AUROC 0.985 against 0.983",
        "costs defect types never seen 0.05 recall",
        "2026-11-28",
    ),
    (
        "separation",
        "the hybrid head's regularisation C = 0.01 or 1 instead of 0.1",
        "0.1 within 0.001 of the best fused AUROC on each set",
        "no other value is better on both sets",
        "2026-11-28",
    ),
    (
        "separation",
        "the classifier (fine-tuned Lite0) as the default",
        "screws 5-fold AUROC 0.957 ± 0.041, 241 s a fold, against the hybrid's 0.974 in 35 s",
        "worse separation for 7x the fit; still `--method classifier`",
        "2026-11-28",
    ),
    (
        "operating point",
        "threshold at max F1 at the training defect share (the old rule)",
        "held-out recall 0.72 against 0.92 (screws, hybrid) and 0.66 against 0.84 (screws, patchcore), balanced accuracy 0.07-0.08 further from the best",
        "it traded missed defects for fewer false alarms; max balanced accuracy is the default",
        "2026-11-28",
    ),
    (
        "changed line",
        "adapt: the new goods' coreset at 10 %",
        "screws, adapt 10, exposure 0.65: false alarms 1.9 % against 40.7 %, recall 80 % against 90 %",
        "a missed defect is the expensive error",
        "2026-11-30",
    ),
    ("changed line", "adapt: the threshold on the new goods alone", "recall 34 %", "the threshold lands above every one of a handful of goods", "2026-11-30"),
    (
        "changed line",
        "adapt: training goods' scores shifted, not widened",
        "screws strong blur, adapt 20: 66 % false alarms against 7 % announced",
        "the new line's goods spread wider",
        "2026-11-30",
    ),
    (
        "speed",
        "fp32 bank with int8 queries (quantise predict only)",
        "good parts scored 0.21 standard deviations higher",
        "more false alarms than announced; fitting on int8 features removes the bias",
        "2026-11-30",
    ),
    (
        "speed",
        "the layers that write the read maps kept in fp32",
        "score shift 0.19 instead of 0.21 standard deviations, backbone slower",
        "little gained for the time",
        "2026-11-30",
    ),
    (
        "speed",
        "bfloat16 minima without the exact float32 distances",
        "search 9.9 against 13.3 ms an image; distances off 0.29 % median, 1.5 % at the 99th percentile",
        "the exact pass keeps 99 % within 0.2 % for 3.4 ms",
        "2026-11-30",
    ),
    (
        "speed",
        "PCA of the 152 features to 64",
        "product 2.4x smaller; distances off 16 % (median)",
        "nearest-neighbour distances live in the discarded variance",
        "2026-11-30",
    ),
    (
        "speed",
        "PyTorch bfloat16 backbone (autocast)",
        "12.2 ms an image against 31.4 fp32",
        "slower than int8, and only where bfloat16 is native",
        "2026-11-30",
    ),
    (
        "height maps",
        "the window for float (and 16-bit offset) goods with a quarter or a tenth of their spread each side (data/bit_depth.OFFSET_MARGIN) instead of half",
        "the development sets saved as float height maps (8.0 + (grey - 128) / 255 mm), held out, one patchcore fit each on goods alone (the defaults; Intel Xeon, AMX): "
        "screws 0.937 (half), 0.951 (a quarter), 0.941 (a tenth); magtiles 0.939 (half), 0.936 (a quarter); their 8-bit screws 0.952",
        "no margin is better on both sets, within one fit's spread; half keeps the most room for a defect beyond the goods' values",
        "2026-12-07",
    ),
    (
        "int8 on a changed line",
        "the int8 bank made of the patches fp32's coreset picks (the same images' fp32 features picked on, their int8 features kept) instead of the int8 features' own picks: the greedy coreset shares only 16 % (screws) and 20 % (magtiles) of its picks between the two precisions, though their features are at cosine 0.998",
        "patchcore on the shift topic's line (fold 0 held out, the bank by the shipped rule, 5 folds, searched in float32; Intel Xeon, AMX, offline): int8 less fp32 over the 19 conditions, mean / mean size / conditions within 0.003: screws -0.0003 / 0.0235 / 3 of 19 (own picks) against -0.0047 / 0.0100 / 5 of 19 (fp32's picks); magtiles +0.0001 / 0.0083 / 5 of 19 against +0.0028 / 0.0033 / 16 of 19",
        "int8 follows fp32 two to three times as closely, but is no more accurate on average: not shipped yet, since it needs the fp32 backbone's features of every good at the fit (a second pass and, held whole, twice the fit's feature memory), on Ray too, and in adapt. The next lever for int8's per-shift bar; the screws would still be 14 of 19 conditions outside 0.003",
        "2026-12-07",
    ),
    (
        "int8 on a changed line",
        "the convolutions and sums that write the stride-8 and stride-16 maps kept in fp32 (the maps without int8 steps), the ranges from the extremes as shipped",
        "the screws near the training images over all 5 folds (precision_shift_pooled's protocol, its 7 near conditions; Intel Xeon, AMX, offline): "
        "int8 less fp32 mean -0.0025 / +0.0032 (seeds 0 / 1) against -0.0034 / -0.0050 as shipped; unshifted -0.0013 / +0.0028",
        "closes the screws' loss near the training images about as the percentile ranges do (BENCHMARKS.md, int8 on a changed line), "
        "but with two more convolutions in fp32, where the percentile ranges change no layer",
        "2026-12-07",
    ),
    (
        "int8 on a changed line",
        "the int8 activation ranges also taken from each calibration image with sensor noise (sigma 8 grey levels)",
        "screws line (fold 0), mean AUROC over the 19 shift conditions 0.881 against 0.887 (ranges from the clean images); "
        "strong sensor noise 0.869 against 0.861, strong JPEG 0.570 against 0.631",
        "no closer to fp32 under noise, worse elsewhere: the int8-fp32 gaps under shift are not clipped ranges",
        "2026-12-05",
    ),
    (
        "few goods",
        "a bank of 6,144 or 12,288 rows instead of 8,192 (16 screws learnt at 24 turns)",
        "screws AUROC 0.914 / 0.917 (6,144), 0.925 / 0.943 (12,288) against 0.925 / 0.937 (8,192), two draws",
        "6,144 loses 0.015; 12,288 gains 0.003 for a search 1.5x as long",
        "2026-12-05",
    ),
    (
        "few goods",
        "12 turns of 30 degrees instead of 24 of 15 (16 screws)",
        "screws AUROC 0.921 / 0.900 against 0.925 / 0.937, two draws; fit 17 against 26 s",
        "0.02 AUROC for 9 s of fit",
        "2026-12-05",
    ),
    (
        "few goods",
        "the magnetic tiles' goods learnt turned (24 turns), or their 8 quarter turns and mirror images",
        "magtiles AUROC at 16 goods 0.837 / 0.814 (24 turns), 0.856 / 0.833 (8 copies) against 0.838 / 0.825 as they are, two draws",
        "a surface of varied shapes is not a part lying at an angle: the few-goods gap there is not orientation",
        "2026-12-05",
    ),
    (
        "few goods",
        "the magnetic tiles' goods also learnt stretched to other shapes (widths x0.5, x0.7, x1.4, x2.0, or x0.6, x1.6, then squashed as usual): the tiles come in aspect ratios from 0.4 to 2.7",
        "magtiles AUROC at 16 goods, 3 draws: 0.850 / 0.832 / 0.847 (4 stretches), 0.847 / 0.829 / 0.846 (2) against 0.838 / 0.825 / 0.839 as they are; fit 11 against 7 s",
        "+0.009 where the bar needs +0.05: the few-goods gap on the tiles is not the squashing's varied scale either",
        "2026-12-05",
    ),
    (
        "separation",
        "the magnetic tiles' levels as they are (`--levels as-is`) instead of stretched: the accuracy topic's patchcore run, same code",
        "5-fold AUROC 0.931 against 0.950, recall 0.87 at 10.3 % false alarms against 0.88 at 8.0 %; a defect type never seen: AUROC 0.917 against 0.937, recall 0.87 at 11.0 % false alarms against 0.80 at 5.2 % (cracks 0.61 against 0.39)",
        "better separation and fewer false alarms stretched; where catching a type never seen matters more, `--levels as-is` keeps the earlier trade-off",
        "2026-12-05",
    ),
    (
        "few goods",
        "the image score from k = 3 or 5 nearest bank rows, or the mean of the 5 or 20 highest patches instead of the highest (16 tiles, offline on each fit's bank)",
        "magtiles AUROC at 16 goods, 3 draws: 0.833 (k = 3), 0.833 (k = 5), 0.832 / 0.825 (top 5 / 20) against 0.834",
        "the gap is not the single worst patch",
        "2026-12-05",
    ),
    (
        "few goods",
        "the patch distance as a cosine (features of unit length), or relative to the query's length",
        "magtiles AUROC at 16 goods, 3 draws: 0.807 (cosine), 0.771 (relative) against 0.834",
        "worse: a feature's length carries the defect too",
        "2026-12-05",
    ),
    (
        "few goods",
        "each patch also matched with its own image's patches more than 3, 6 or 10 patches away (a surface is its own reference)",
        "magtiles AUROC at 16 goods, 3 draws: 0.795 / 0.815 / 0.818 against 0.834; cracks 0.49-0.55 against 0.61",
        "a crack's patches match the rest of the same crack",
        "2026-12-05",
    ),
    (
        "few goods",
        "Lite0 instead of Lite1, or 448 px instead of 320, for 16 tiles",
        "magtiles AUROC at 16 goods, 3 draws: 0.832 (Lite0), 0.836 (448 px) against 0.834",
        "no gain",
        "2026-12-05",
    ),
    (
        "few goods",
        "Lite2 instead of Lite1 for 16 tiles (320 px, the shipped fit otherwise: levels stretched, patchcore's bank rule)",
        "magtiles AUROC at 16 goods, 2 draws: 0.870 / 0.850 against 0.866 / 0.841; by defect type, first draw: blowhole 0.844 against 0.870, break 0.948 against 0.923, crack 0.842 against 0.818, fray 0.937 against 0.915, uneven 0.829 against 0.826",
        "+0.007 for a larger backbone (worse on the screws, above); the gap to the full-data model lies mostly in uneven surfaces and cracks (the few-goods section, by defect type), which a larger backbone does not close",
        "2026-12-06",
    ),
    (
        "few goods",
        "a correction of the goods-only threshold for leave-one-out scores taken from banks one good smaller (the few-goods topic measured fewer false alarms than announced: screws 0.8 % at 16 goods against 5.9 %)",
        "under the same bank, the share of new goods scoring above a held-out good, where 0.5 means no bias (`benchmarks/probes/goods_only_exchangeability.py`, 24 random draws of 16 goods and 60 new ones, 4 held out each): screws 0.512 +- 0.029, magtiles 0.437 +- 0.032. On the topic's own draws of 16 tiles the same features give the same low shares as the shipped fit (0.35, 0.36, 0.43 on draws 0-2): those draws' goods happen to score high, not the fit",
        "no bias to correct: a held-out good and a new one are exchangeable under the bank without the first, so the rank rule's r / (n + 1) holds; the topic's low rates are its 5 draws' chance (a rate announced at 5.9 % is Beta(1, 16): median 4.2 %)",
        "2026-12-06",
    ),
    (
        "few goods",
        "the tiles' goods also learnt shifted by half a patch (3 copies moved 4 px at 320 px, edges reflected; the bank rule's 8,192 rows from all the copies)",
        "magtiles AUROC at 16 goods, first draw (fp32, levels stretched, offline): 0.866 against 0.870; crack 0.824 against 0.816, fray 0.895 against 0.919, uneven 0.834 against 0.836",
        "no gain: the few-goods gap on the tiles is not where the patch grid falls",
        "2026-12-06",
    ),
    (
        "few goods",
        "two backbones together: Lite1's and Lite2's patchcore (320 px, each its own bank by the shipped rule), each image score standardised by the mean and spread of its 16 goods' leave-one-out scores, and the two added",
        "magtiles AUROC at 16 goods, 3 draws (fp32, levels stretched, offline): 0.875 / 0.855 / 0.852 (together) against 0.870 / 0.843 / 0.847 (Lite1) and 0.870 / 0.852 / 0.850 (Lite2); crack 0.613-0.833 against 0.618-0.816",
        "+0.008 for two backbones and two searches (every model's predict about twice as long): short of the +0.03 the tiles' bar needs",
        "2026-12-06",
    ),
    (
        "few goods",
        "each patch's distance taken relative to the goods' own distances at that place: the 16 goods' leave-one-out maps (each good against the bank of the other 15) give a mean and spread per patch position, and the image score is the highest of the map less that mean, or over that spread",
        "magtiles AUROC at 16 goods, 3 draws (fp32, levels stretched, the shipped bank rule, offline): 0.849 (less the mean, smoothed), 0.818 (over the spread) against 0.853; uneven 0.856-0.899 against 0.786-0.836, but crack 0.581-0.755 against 0.618-0.816; the goods' highest patch lies on the tile's border (within 2 patches) in 60 % of goods, 38 % of defects",
        "uneven surfaces gain what cracks and edge defects lose: a defect at the border is where goods already score high",
        "2026-12-06",
    ),
    (
        "few goods",
        "each patch's distance divided by how spread the bank is around its nearest row (the distance from that row to its 1st, 3rd or 5th nearest other row, plus 0.5 or 1 times their mean): a local density, as the paper's reweighting is",
        "magtiles AUROC at 16 goods, 3 draws (fp32, levels stretched, the shipped bank rule, offline): 0.845-0.855 against 0.853",
        "no gain",
        "2026-12-06",
    ),
    (
        "few goods",
        "other stages of Lite1 in the patch descriptor: the stride-4 stage (24 channels, pooled to stride 8) beside strides 8 and 16, or the first stride-16 stage (80 channels) beside the last",
        "magtiles AUROC at 16 goods, 3 draws (fp32, levels stretched, the shipped bank rule, offline): 0.844 (with stride 4), 0.841 (with both stride-16 stages) against 0.853; cracks 0.616-0.802 and 0.580-0.805 against 0.618-0.816",
        "no gain: finer or more features do not find the cracks a few goods miss",
        "2026-12-06",
    ),
    (
        "few goods",
        "synthetic defects made on the 16 goods (darker or brighter low-frequency blobs, thin dark cracks, cut-and-paste scars; 6 a good) teaching a "
        "linear patch discriminator (logistic regression, C = 0.01 or 0.1, the goods' patches against the defects' own), its blurred maximum alone or "
        "added to the nearest-row score at weight 0.25-1 (each standardised by the goods' scores), as DRAEM and CutPaste learn from made defects",
        "magtiles AUROC at 16 goods, 3 draws (fp32, levels stretched, the shipped bank rule, offline): the discriminator alone 0.721-0.725 (real "
        "cracks 0.48-0.51); added 0.843-0.847 (0.25), 0.797-0.806 (1) against 0.853; uneven +0.03 at 0.25, cracks -0.07",
        "worse: the made cracks do not teach the real ones, and what the made blobs teach of uneven surfaces the cracks give back",
        "2026-12-06",
    ),
    (
        "few goods",
        "the backbone's border: every convolution padded by reflecting or repeating the edge instead of with zeros, or the image reflected by 16 px "
        "before the backbone and the maps cropped back to the image (the goods' highest patch lies on the tile's border in 60 % of goods)",
        "magtiles AUROC at 16 goods, 3 draws (fp32, levels stretched, the shipped bank rule, offline): 0.859 (reflect), 0.853 (repeat), 0.856 (image "
        "reflected, 1.2x the backbone's work) against 0.853; reflect: blowholes and uneven surfaces +0.02 to +0.06, cracks -0.03 to -0.13, fray -0.05",
        "no gain on average: the border's padding moves the gap between defect types, it does not close it",
        "2026-12-06",
    ),
    (
        "few goods",
        "an image-level descriptor beside the patch score: the mean and spread (or the mean alone) of each of Lite1's two maps over the image, its distance to the "
        "nearest of the 16 goods' (plain, or each feature over the goods' spread), standardised by the goods' leave-one-out distances and added to the "
        "standardised patch score at weight 0.5 or 1 (a tile uneven all over changes its statistics)",
        "magtiles AUROC at 16 goods, 3 draws (fp32, levels stretched, the shipped bank rule, offline): the descriptor alone 0.708-0.724; added to the patch "
        "score 0.843-0.850 (weight 0.5) and 0.822-0.833 (1) against 0.853; first draw: uneven 0.859-0.865 against 0.836, but blowholes 0.793-0.845 against 0.871",
        "worse: what it gains on uneven surfaces it loses on small defects, which an image's statistics do not see",
        "2026-12-06",
    ),
    (
        "few goods",
        "test-time mirror views: each test image also scored mirrored left-right, upside-down and both (the shipped fit of 16 goods, its own bank), "
        "the image's score the mean, the highest or the lowest of the 4 views' scores",
        "16 goods, the few-goods topic's first 3 draws and test sets (the shipped fit, int8; Intel Xeon, AMX): magtiles 0.866 / 0.841 / 0.846 -> "
        "mean 0.874 / 0.850 / 0.859 (+0.010), lowest 0.873 / 0.861 / 0.851, highest 0.867 / 0.833 / 0.855; screws 0.931 / 0.924 / 0.932 -> "
        "mean 0.890 / 0.930 / 0.931, lowest 0.929 / 0.937 / 0.949 (+0.009), highest 0.740 / 0.759 / 0.759: a mirrored screw alone scores 0.74-0.77 "
        "(a thread has a hand)",
        "a hundredth at four times predict's time (the bar: within 1.5x of the full-data model), and the lowest view, the one that gains on both sets, "
        "passes a part that is itself mirrored, as the orientation check (data/orientation.py) refuses to learn where the goods never show one",
        "2026-12-06",
    ),
    (
        "few goods",
        "a patch's distance to the affine hull of its k nearest bank rows instead of to the nearest row (a local linear reconstruction, ridge 0.1 of the neighbours' mean squared spread; as FastRecon and LLE reconstruct): goods that interpolate between the few goods' patches count as seen",
        "16 goods, the shipped fit's own bank searched whole (3 draws, offline): screws 0.931 / 0.923 / 0.930 -> 0.940 / 0.948 / 0.968 (k = 16, +0.024), magtiles 0.866 / 0.841 / 0.846 -> 0.884 / 0.848 / 0.860 (+0.013; fp32 k = 2 / 4 / 8 / 16 / 32 / 64: +0.004 / +0.007 / +0.009 / +0.012 / +0.012 / +0.012); with the tiles' widths copies too 0.871 (+0.018); the full-data models: magtiles 0.940 -> 0.950, screws 0.977 -> 0.966; each bank row's 15 neighbours fixed at the fit instead of the query's own (no search for them at predict): 0.852 against 0.851, no gain; the shipped bank halved by the coreset (4,096 rows) and the hull of k = 16: screws 0.943 (0.925 / 0.935 / 0.968), magtiles 0.864 (0.885 / 0.845 / 0.863) against 0.928 and 0.851 for 8,192 rows and the nearest row; at other numbers of goods (2 draws, 8,192 rows, hull against nearest): screws 4 goods 0.824 / 0.852 against 0.847 / 0.848, 64 goods 0.963 / 0.956 against 0.933 / 0.946; magtiles 64 goods 0.874 / 0.877 against 0.877 / 0.882. Measured again with `benchmarks/probes/local_reconstruction.py` (k = 16, ridge 1.0; both scores from one fit, int8 features searched in float32; Intel Xeon, AMX): 16 goods, all 5 draws, screws 0.936 -> 0.952 (0.931 / 0.923 / 0.930 / 0.949 / 0.948 -> 0.951 / 0.944 / 0.965 / 0.956 / 0.946), by parts as shipped 0.931 / 0.924 -> 0.950 / 0.941 (draws 0-1); magtiles 0.855 -> 0.866 (0.866 / 0.841 / 0.846 / 0.846 / 0.877 -> 0.886 / 0.848 / 0.858 / 0.853 / 0.883); 4 screws by parts, 3 draws, 0.845 / 0.829 / 0.924 -> 0.800 / 0.821 / 0.920; the full-data models (all the pool's goods, one fit, by parts): screws 0.966 -> 0.977, magtiles 0.940 -> 0.944, so the full-data screws' loss above (against the topic's own fit, 0.977) was a refit's difference, not the hull's",
        "its gain does not hold across the numbers of goods: it loses at 4 screws (-0.010; -0.019 by parts, measured again) and at 64 tiles (-0.004), so a rule for when to use it would be fitted to these draws; and it leaves the tiles at 16 goods 0.014 short even with the widths' copies. Its cost was measured for a later try: the query's own 16 nearest rows need a top-k (22 ms an image over 8,192 rows, against 9 for the minimum), on half the bank PyTorch float32 59 ms an image against the nearest row's 95 over 8,192 rows, and ONNX Runtime's int8 product over 4,096 rows with a top-16 and the hull (Gather, Gram, com.microsoft's Inverse) 52 ms against 55 for the int8 product and minimum over 8,192 (AMD EPYC, AVX2, 2 threads, 3 rounds of 21)",
        "2026-12-06, 2026-12-07",
    ),
    (
        "few goods",
        "a model grown by adapt held to the bank a fit on all its goods would keep (the rule's rows for all the goods at today's turns, as a share of the patches learnt), instead of the rule's share of every patch it learnt: its first goods were learnt at more turns than a fit on all would give them",
        "screws, 4 goods (24 turns) adapted with 12, then 80 (4 turns), then 10 (3 turns), against the same 106 fitted at once, scored on 75 other goods and the 50 defects (one draw, Intel Xeon, AMX): bank 5,088 rows, AUROC 0.921 against 11,744 rows, 0.954 (the shipped share); fitted at once 5,088 rows, 0.969",
        "the same size loses 0.033: half of its rows then come from the first 16 goods' turned copies, and the later goods are covered by a coreset of a coreset. The shipped share keeps the larger bank (a search 2.3x as long as the fit at once's); the grown model is still 0.015 short of the fit at once",
        "2026-12-07",
    ),
    (
        "few goods",
        "the patch descriptor's stride-8 block (40 of its 152 features) weighted 0.5, 0.7, 1.4 or 2 against the stride-16 block, bank and queries alike",
        "16 goods, the shipped fit (3 draws, offline; Intel Xeon, AMX): magtiles 0.866 / 0.841 / 0.846 (1) against 0.865 / 0.847 / 0.848 (0.5), 0.867 / 0.845 / 0.848 (0.7), 0.859 / 0.833 / 0.844 (1.4), 0.843 / 0.818 / 0.835 (2)",
        "+0.003 at 0.5-0.7: the balance of the two scales is not where the tiles' gap lies",
        "2026-12-07",
    ),
    (
        "few goods",
        "every patch of 16 tiles in the bank (25,600 rows, `--coreset-ratio 1.0`) instead of the bank rule's 8,192",
        "magtiles AUROC at 16 goods, 3 draws (the shipped fit otherwise; Intel Xeon, AMX): 0.867 / 0.842 / 0.848 against 0.866 / 0.841 / 0.846",
        "+0.001 for a search 3.1x as long: the rule's coreset already holds what the 16 tiles show",
        "2026-12-07",
    ),
    (
        "few goods",
        "the image score's blur at other sigmas (0.5, 2 or 3 patches instead of 1), or several together (the ranks of the sigma-1 and sigma-2 or -3 maxima added, or their larger): broad uneven surfaces and thin cracks each at their own scale",
        "16 goods, the shipped fit (3 draws, offline; Intel Xeon, AMX): magtiles 0.866 / 0.841 / 0.847 (sigma 1) against 0.873 / 0.845 / 0.852 (0.5), 0.843 / 0.820 / 0.823 (2), 0.817 / 0.796 / 0.788 (3); sigmas 1 and 2 together 0.857 / 0.832 / 0.838, 1 and 3 0.847 / 0.822 / 0.824",
        "+0.005 at sigma 0.5, which the full data chose against (the score blur's own row); a broader blur loses on every draw",
        "2026-12-07",
    ),
    (
        "few goods",
        "the nearest-row search in a whitened feature space: the 16 goods' patch features centred and scaled along their principal axes by (eigenvalue + a x the mean eigenvalue) to the power -1/2 or -1/4 (a = 1, 0.1, 0.01; a Mahalanobis distance shrunk towards the plain one), bank and queries alike",
        "16 goods, the shipped fit's own bank (3 draws of the tiles, 2 of the screws, offline; Intel Xeon, AMX): magtiles 0.866 / 0.841 / 0.846 -> at best 0.877 / 0.837 / 0.845 (a = 0.1, power -1/2), 0.871 / 0.843 / 0.848 (a = 0.1, -1/4); screws 0.931 / 0.924 -> 0.919 / 0.897 (a = 1, -1/4) down to 0.793 / 0.795 (a = 0.01, -1/2)",
        "no gain on the tiles (+0.003 at best) and a loss on the screws: the goods' rare directions are not where the tiles' defects differ",
        "2026-12-07",
    ),
    (
        "few goods",
        "the image score less the image's own typical patch distance (its median, times 0.25, 0.5 or 1; its mean; its lower quartile), or over its median: a tile whose whole surface is unlike the few goods is not a defect",
        "16 goods, the shipped fit (3 draws, offline; Intel Xeon, AMX): magtiles 0.866 / 0.841 / 0.846 -> 0.869 / 0.841 / 0.847 (less 0.25 x the median), 0.852 / 0.816 / 0.831 (less the median), 0.810 / 0.768 / 0.791 (over it); less 0.5 x the median, by type: cracks +0.02 to +0.04, uneven surfaces -0.03 to -0.04",
        "no gain: the cracks it lifts are paid for by uneven surfaces, whose defect is the whole surface, as every other lever of this section traded them",
        "2026-12-07",
    ),
    (
        "few goods",
        "the deeper patch descriptor again, with the shipped bank rule (each good's coreset, 8,192 rows for 16 goods) instead of every good patch: strides 8 and 16 and one stride-32 map, stage 5 (192 channels) or stage 6 (320)",
        "magtiles AUROC at 16 goods, 2 draws (fp32, levels stretched, offline): 0.877 / 0.836 (stage 5), 0.872 / 0.830 (stage 6) against 0.870 / 0.843 (strides 8 and 16); cracks 0.777 / 0.628 against 0.816 / 0.660, blowholes 0.922 / 0.894 against 0.871 / 0.862",
        "no gain on average: the +0.013 measured with every good patch in the bank (below) does not carry over to the bank the fit keeps, and the features are 2.3x as long",
        "2026-12-06",
    ),
    (
        "few goods",
        "the tiles' levels set by other rules than the shipped 1st-99th percentile stretch (data/levels.py): each image to one mean and standard deviation; histogram equalisation; the 5th-95th percentile; or the goods also learnt brighter and darker (x0.8, x1.25) or at other contrasts (x0.7, x1.4) instead",
        "magtiles AUROC at 16 goods, 3 draws: 0.852 (mean and deviation), 0.835 (equalised), 0.849 (5th-95th), 0.843 (brighter and darker copies), 0.839 (contrast copies) against 0.860 for the 1st-99th stretch and 0.834 for none",
        "the shipped stretch is the best of them",
        "2026-12-05",
    ),
    (
        "few goods",
        "with the levels stretched: the tiles' goods also learnt at other widths (x0.5, x0.7, x1.4, x2.0), as four half-size crops (texture x2), mirrored 2 x 2 (texture x0.5), or letterboxed",
        "magtiles AUROC at 16 goods, 3 draws: 0.870 (widths), 0.856 (crops), 0.855 (mirrored), 0.867 (all three), 0.811 (letterbox) against 0.857 (the stretch alone)",
        "+0.013 for the widths, short of the bar, for a fit half as long again and a rule on when shapes vary: left for now",
        "2026-12-05",
    ),
    (
        "few goods",
        "a deeper patch descriptor: the stride-32 map (192 channels) beside strides 8 and 16 (fp32, levels stretched, every good patch in the bank, offline)",
        "magtiles AUROC at 16 goods, 2 draws: 0.875 / 0.851 against 0.856 / 0.844 (strides 8 and 16); stride 16 alone 0.868 / 0.853, stride 8 alone 0.738 / 0.740",
        "+0.013 for features 2.3x as long (the bank search's cost, and every model's): the next lever to weigh on both sets",
        "2026-12-05",
    ),
    (
        "few goods",
        "the image score taken relative to the image's own patch distances: the highest less the median, over the median, less the mean, less the 90th percentile, or less the median over the interquartile range (a bright, contrasty good tile's patches all lie further from the bank)",
        "magtiles AUROC at 16 goods, 3 draws (fp32, levels stretched, every good patch in the bank, offline): 0.835 / 0.776 / 0.837 / 0.815 / 0.709 against 0.855 for the highest alone (strides 8 and 16); with stride 16 alone 0.838 / 0.770 / 0.839 / 0.802 / 0.680 against 0.866",
        "worse: a defect that spreads over a tile raises its median too",
        "2026-12-05",
    ),
    (
        "few goods",
        "each patch's neighbourhood (the average over k x k patches before the search) of 1 (none), 5 or 7 instead of 3, and the map blurred by 0.5 or 2 patches instead of 1",
        "magtiles AUROC at 16 goods, first draw (fp32, levels stretched, every good patch in the bank, offline), strides 8 and 16 / stride 16 alone: k = 1 0.632-0.663 / 0.674-0.689, k = 5 0.819-0.824 / 0.838, k = 7 0.786-0.791 / 0.808 against k = 3 0.856 / 0.868; blur 0.5 0.857 / 0.868, blur 2 0.833 / 0.860",
        "the shipped 3 x 3 neighbourhood and 1-patch blur are the best of these on the tiles: the few-goods gap is not the patch's context",
        "2026-12-05",
    ),
    (
        "few goods",
        "the patch distance measured in the goods' own spread: each feature divided by its standard deviation over the bank's patches (plus a tenth of the mean), or the bank's covariance whitened (shrunk 5 % or 30 % towards its mean variance)",
        "magtiles AUROC at 16 goods, first draw (fp32, levels stretched, every good patch in the bank, offline): 0.862 (per feature), 0.862 / 0.860 (whitened) against 0.856 (strides 8 and 16); with stride 16 alone 0.868 / 0.861 / 0.861 against 0.868",
        "+0.006 where the bar needs +0.03: the few-goods gap is not a few features' scale",
        "2026-12-05",
    ),
    (
        "few goods",
        "the deeper maps on their own coarser grid: stride 16 alone, or strides 16 and 32, searched at stride 16 (20 x 20 patches at 320 px, a quarter of the queries and bank rows)",
        "magtiles AUROC at 16 goods, first draw (fp32, levels stretched, every good patch in the bank, offline): 0.852 (stride 16), 0.863 (16 and 32; 0.863 with the map blurred by half a patch) against 0.856 (strides 8 and 16 at stride 8)",
        "+0.007 where the bar needs +0.03, and a map a quarter as fine for every model: the deeper features do not close the tiles' gap either",
        "2026-12-05",
    ),
    (
        "few goods",
        "every tile at one scale instead of squashed: its short side resized to 320 px and square 320 px windows spread over its long side (2 or 3 for most tiles), each window's patches in the bank, an image's score the highest of its windows'",
        "magtiles AUROC at 16 goods, first draw (fp32, levels stretched, every good patch in the bank, offline): 0.851 against 0.856 squashed; the bank 38,400 rows against 25,600, the backbone 2.1x the images",
        "no gain for twice the work: with the widths' copies and the letterbox, the third measurement that the tiles' few-goods gap is not their varied shapes",
        "2026-12-05",
    ),
    (
        "few goods",
        "a whole-image score beside the patch score, for surfaces that are uneven all over: each image's pooled descriptor (the hybrid head's: the mean and maximum of the stride-16 and stride-32 maps; or the patch features' own mean and maximum), standardised by the 16 goods' spread, scored as the distance to the nearest good, a Ledoit-Wolf Mahalanobis distance, or the distance to the goods' mean, and added at weight 0.25 or 0.5 to the patch score (each standardised by the goods' leave-one-out scores)",
        "AUROC at 16 goods (the shipped fit, int8, levels stretched on the tiles, offline): magtiles, 3 draws, the whole-image score alone 0.726-0.824, added 0.851 (Mahalanobis, 0.25: 0.875 / 0.829 / 0.848) and at best 0.856 (the patch features' pooled distance to the mean, 0.25: 0.866 / 0.841 / 0.861) against 0.851 (0.866 / 0.841 / 0.846); screws, 2 draws, alone 0.53-0.71, the same two added 0.911 (Mahalanobis) and 0.916 (distance to the mean) against 0.928 (0.931 / 0.924)",
        "+0.005 at best on the tiles and -0.012 to -0.017 on the screws: what 16 goods say of a whole tile is no surer than what their patches say",
        "2026-12-07",
    ),
    (
        "few goods",
        "the goods also learnt at other focus and noise (a camera's focus and gain vary): each of 16 goods also blurred (Gaussian, sigma 1 and 2 px), sharpened (unsharp mask, radius 2, 100 %), with sensor noise (sigma 4 and 8 grey levels), or all four (blur 1 and 2, unsharp, noise 8), fitted as one set of goods by the shipped rule",
        "AUROC at 16 goods, the few-goods topic's draws (the shipped fit, int8, Intel Xeon with AMX, offline): magtiles, 3 draws, 0.859 (blur), 0.858 (sharpened), 0.856 (noise), 0.860 (all four: 0.881 / 0.844 / 0.855) against 0.851 (0.866 / 0.841 / 0.846); screws, 2 draws, all four 0.762 / 0.832 against 0.931 / 0.924",
        "+0.009 at best on the tiles where the bar needs +0.03, and the screws lose 0.09 to 0.17 (why was not looked into)",
        "2026-12-07",
    ),
    (
        "speed",
        "serve: the images decoded while the one before was scored judged together, two ONNX Runtime calls at once on a core each (as watch's bursts and batch predict), one client's image alone still on every core",
        "the line topic's 4 clients at once (Intel Xeon, AMX, 2 cores): screws 52.4 images/s, 0.84x batch predict, against 51.1, 0.83x the run before; magtiles 41.6 against 41.0 (0.85x / 0.84x); sequential requests 23.7 / 30.0 ms against 23.5 / 30.0",
        "no gain: the gap to batch predict is the HTTP work and the clients' own, on the same two cores, not how the images are scored; it would have cost serve a second session",
        "2026-12-07",
    ),
    (
        "speed",
        "the exported bank search by slices of 2,048 bank rows (each multiplied and reduced before the next), and then two calls in flight in watch and serve too",
        "the same picks; a call held 40 instead of 85 MB (screws' bank) and 35 instead of 147 (magnetic tiles'); predict's peak 323 / 345 MiB against 387 / 575; a watch with two calls in flight 256.8 -> 256.3 MiB over 20,000 images; but one image alone 35.4 against 32.2 ms (screws' graph, 2 threads, 5 interleaved rounds of 40); slices of 1,024 rows slower still, of 4,096 twice the memory",
        "the line waits for one image at a time, and the memory bounds hold without it (watch and serve keep one call in flight)",
        "2026-12-05",
    ),
    (
        "speed",
        "the scoring graph's int8 bank search in smaller blocks of products, so that each block's products stay in cache for the minimum that reads them: 4, 2 or 1 MB instead of 16 (an image's positions in 8, 16 or 32 blocks on screws)",
        "whole predict of the 64 camera screws 2.32 / 2.36 / 2.52 s against 2.38 s; one image a call 24.3 / 26.4 / 29.3 ms against 22.2 (`python -m benchmarks.probes.search_blocks MODEL FOLDER --budgets 16 4 2 1 --rounds 3`, Intel Xeon, AMX, 2 cores). In ONNX Runtime's profile of one call (one thread) the search is 7.9 ms of products (DynamicQuantizeMatMul) and 2.7 of ReduceMin over 28.7 ms, its products written and read at about 12 GB/s",
        "no gain: each block's own steps (the queries quantised, the minimum, the gathers) cost what the cache saves; ONNX Runtime has no product fused with its minimum",
        "2026-12-08",
    ),
    (
        "speed",
        "OpenVINO for the int8 backbone",
        "5.7 ms an image against ONNX Runtime's 9.4",
        "180 MB more to install, and its rounding differs: a model fitted on one fails the probe check on the other. The next lever.",
        "2026-11-30",
    ),
    ("speed", "torchvision's `decode_png` and resize", "8.0 ms a 1024 px PNG against Pillow's 9.1", "1 ms: PNG unfiltering dominates either way", "2026-11-30"),
    (
        "speed",
        "ONNX Runtime's threads spinning between the int8 backbone's calls",
        "whole predict 14-16 % slower, 35 % more CPU time (320 PNGs, both sets)",
        "the spinning threads take the cores from PyTorch's search and the decoding worker",
        "2026-11-30",
    ),
    (
        "speed",
        "blocks of 1,536 queries for the int8 search instead of 512",
        "whole predict within noise (12.7-13.5 s against 12.7-13.2 s, screws)",
        "no gain",
        "2026-11-30",
    ),
    (
        "speed",
        "pyspng (libspng) or zlib-ng for the PNG decode",
        "pyspng 7.6-10.3 ms against Pillow's 8.2-10.3; zlib-ng inflates in 2.4 ms against zlib's 3.1, but Pillow brings its own zlib",
        "the camera's PNG filter sets the cost: Paeth rows take 4 ms of Pillow's 10 (5.5 ms unfiltered)",
        "2026-11-30",
    ),
    (
        "speed",
        "blocks of 64, 128, 256 or 1,024 queries for PyTorch's float32 search instead of 512, on an AVX2 CPU (AMD EPYC, no VNNI)",
        "83.9 / 63.5 / 53.7 / 44.5 ms an image against 52.2 (a bank of 5,120 rows of 152 features, 1,600 queries an image, 2 threads, best of 5)",
        "predict, watch and serve run the model file's scoring graph, which searches one image's queries in one block; PyTorch's "
        "blocked search is the fit's and the fallback's, where 1,024 is a choice to weigh with the AMX CPU's 512",
        "2026-12-06",
    ),
    (
        "speed",
        "the scoring graph's bank search on an AVX2 CPU (AMD EPYC, no VNNI): its queries split into 2-16 blocks, each multiplied "
        "and reduced before the next (the 33 MB block of products in cache), or float32 products instead of the int8 ones",
        "the search 42.5 ms an image against 42.4-42.9 split (a screws bank of 5,120 rows, 1,600 queries, 2 threads, medians "
        "of 25); float32 37-40 against int8 38-39 ms; 33 GMAC/s either way, where PyTorch's and numpy's float32 products peak "
        "at 31-32 on this CPU",
        "the product runs at this CPU's rate in both precisions: without VNNI the lever is fewer products, not other kernels",
        "2026-12-06",
    ),
    (
        "speed",
        "fewer products on an AVX2 CPU (AMD EPYC): the bank's rows and the queries projected on the bank's first 48 principal "
        "axes, the 16 nearest rows there picked (TopK) and their exact distances taken",
        "the exact nearest row picked for 99.95 % (screws) and 99.88 % (magnetic tiles) of patches, no image score changed (16 "
        "images each, 64 goods' patches as the bank); in ONNX Runtime 33.8 ms an image against 38-42 (the projected product "
        "and the exact rows 20 ms, TopK 16 ms)",
        "6 ms an image, about 6 % of the scoring graph, for a search no longer exact by construction and a new graph in every "
        "model file; ONNX Runtime's TopK over 5,120 rows costs most of what the product saved",
        "2026-12-06",
    ),
    (
        "speed",
        "fewer products, the search itself in fewer dimensions: every patch feature (152 long) projected on the good patches' "
        "first 32, 64 or 96 principal axes (85 %, 94 %, 98 % of their variance on screws), or on 16-64 axes plus the length of "
        "what the axes leave out as one more coordinate (a lower bound of the true distance), and the bank built and searched there",
        "5-fold AUROC, patchcore's fit as shipped, fp32, offline: screws 0.836 / 0.918 / 0.958 (32 / 64 / 96 axes) against 0.980; "
        "with the leftover's length 0.773 / 0.815 / 0.857 / 0.943 (16 / 32 / 48 / 64); magtiles 0.948 / 0.944 (64 / 96) against 0.944",
        "a defect lies off the directions along which good patches vary: the axes that hold 98 % of the goods' variance lose "
        "0.022 of the screws' AUROC, so only an exact search (the row above) can take fewer products",
        "2026-12-06",
    ),
    (
        "speed",
        "fewer products, a smaller bank: the coreset at 0.5 % or 0.25 % of the good patches instead of 1 % (the bank, and the "
        "search, a half or a quarter); and at 2 % or 4 % for comparison",
        "5-fold AUROC, patchcore's fit as shipped otherwise, fp32, offline: screws 0.908 / 0.826 (banks of 2,560 / 1,280 rows) "
        "against 0.980 (5,120), 0.982 / 0.980 at 2 % / 4 %; magtiles 0.928 / 0.915 (4,800 / 2,400) against 0.944 (9,600)",
        "1 % sits at the knee: half the bank loses 0.07 of the screws' AUROC and 0.016 of the tiles', twice the bank gains 0.002",
        "2026-12-06",
    ),
    (
        "speed",
        "blocks of 64-400 queries for the int8 search instead of 512",
        "magtiles 15.9-17.6 ms an image against 15.9, screws 8.2-11.5 against 8.5 (in one process, 7 rounds)",
        "no gain",
        "2026-11-30",
    ),
    (
        "speed",
        "glibc's malloc keeping freed memory (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_)",
        "whole predict: system time 1.3 s against 2.0, user time 18.1 s against 16.5, wall 11.9-13.5 s against 11.2-15.1 (screws)",
        "no gain in wall time",
        "2026-11-30",
    ),
    (
        "speed",
        "`torch._int_mm` for the bank search",
        "3x slower than the bfloat16 product",
        "no fast int8 matrix product in PyTorch on a CPU; ONNX Runtime's (DynamicQuantizeMatMul) is the shipped int8 search",
        "2026-11-30",
    ),
    (
        "speed",
        "the exported file scored in ONNX Runtime calls of 1 or 2 images instead of 8",
        "whole predict from the int8 export, 2 rounds: magtiles 13.7-16.9 s against 15.4-16.8, screws 11.5-14.0 against 12.8-14.4",
        "within noise",
        "2026-11-30",
    ),
    (
        "speed",
        "the exported search's rows in 8 bits, as predict's, instead of 7",
        "screws: the picks' excess at the 99th percentile 1.7e-3 against 2.9e-3; the scores' largest change from predict's 0.42 % against 0.54 % of their scale",
        "an 8-bit product can overflow on CPUs without VNNI, where the file runs unchecked",
        "2026-11-30",
    ),
    (
        "speed",
        "ONNX Runtime's pre-processing (`quant_pre_process`: shape inference, graph optimisation) before quantising the backbone",
        "int8 backbone 11.0-17.3 ms an image against 11.2-19.3, the same cosine to fp32 (screws, 32 images, 3 rounds)",
        "the same graph: the depthwise convolutions' Pad nodes (a tenth of the backbone's time) stay unfused",
        "2026-11-30",
    ),
    (
        "speed",
        "predict: the next batch's scoring started before the rows of the one before are made (a scoring thread); a first batch of 8 instead of 32; the heavy imports (regions, SciPy) after the decoding starts, the decoding worker forked or spawned",
        "whole predict of 320 camera screws, 5 alternated rounds each against the code before: 1.00x; within noise; +1-2 % forked but one image 0.84 -> 0.90 s (imports after the fork copy the pages they touch), spawned 0.98x and one image 0.82 -> 0.95 s",
        "the cores are already busy (16.9 of 17.8 core-seconds used): what is left of the limit is start-up (1.0 s of CPU) and the two stages sharing two cores",
        "2026-12-05",
    ),
]


def section() -> str:
    lines = ["| topic | lever | effect measured | why not shipped | measured |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {topic} | {lever} | {effect} | {why} | {when} |" for topic, lever, effect, why, when in LEVERS]
    return "\n".join(lines)
