from partialdeploy.cli import main

main()
