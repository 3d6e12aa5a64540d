from videdit.cli import main

main()
