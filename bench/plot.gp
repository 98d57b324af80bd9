# bench/plot.gp: throughput against connections (bench/http.sh writes the data file).
#   gnuplot -e "datafile='plot.dat'; outfile='docs/throughput.png'" bench/plot.gp
set terminal pngcairo size 900,560 font "sans,11"
set output outfile
set title "GET /v1/series/{random key}, 100,000 series, wrk -t1 on core 0, server on core 1"
set xlabel "connections"
set ylabel "requests/s (median of runs)"
set logscale x 2
set xtics (16, 64, 256)
set xrange [12:340]
set yrange [0:*]
set grid
set key bottom right
set datafile missing "NaN"
plot datafile using 1:2 with linespoints lw 2 title "telemetryd (2 readers)", \
     datafile using 1:3 with linespoints lw 2 title "nginx static (2 workers)", \
     datafile using 1:4 with linespoints lw 2 title "Python uvloop+httptools dict (1 worker)", \
     datafile using 1:5 with linespoints dt 2 title "telemetryd (1 reader)", \
     datafile using 1:6 with linespoints dt 2 title "nginx return 200 (memory)", \
     datafile using 1:7 with linespoints dt 3 title "Python asyncio + h11 (1 worker)"
