from anomalycli.cli import main

main()
