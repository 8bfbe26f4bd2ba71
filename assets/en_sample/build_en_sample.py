# ruff: noqa: E501  (the marked-up sentences below are one per line)
"""Build assets/en_sample/{train,dev}.iob from the hand-annotated sentences below.

The sentences are original text written for this project (CC BY 4.0). They are already
tokenised CoNLL-style (tokens separated by single spaces, punctuation split off, "U.S."
one token, possessive "'s" separate). Entities are marked inline as ``[TYPE tok tok]``;
everything else is ``O``. Output: one ``token TAG`` pair per line (IOB2), a blank line
between sentences, and ``-DOCSTART- -X- -X- O`` plus a blank line starting each document.

Run from the repository root:  python assets/en_sample/build_en_sample.py
"""

from __future__ import annotations

from pathlib import Path

TYPES = {"PER", "ORG", "LOC", "MISC"}

# Each document starts with a line "#DOC train" or "#DOC dev"; one sentence per line.
SOURCE = r"""
#DOC train
SOCCER - [ORG RIVERSIDE UNITED] BEAT [ORG HARLOW ATHLETIC] IN CUP OPENER .
[LOC MANCHESTER] , March 16
[ORG Riverside United] beat [ORG Harlow Athletic] 3-1 on Saturday to reach the second round of the [MISC National Challenge Cup] .
Striker [PER Tomas Ferreira] scored twice in the first half , and the [MISC Brazilian] set up a third for [PER Liam Carter] after the break .
[ORG Harlow] pulled one back through a late penalty from captain [PER Owen Price] .
" We controlled the game from the first whistle , " [ORG Riverside] manager [PER Graham Hollis] told reporters .
The crowd of 18,000 was the largest at the ground this season .
[ORG Riverside United] will face [ORG Dunmore Rovers] or [ORG Kelby Town] in the next round .
Elsewhere , [ORG Ashford City] drew 0-0 with [ORG Port Wellan] in heavy rain .
Results of [MISC National Challenge Cup] first round matches on Saturday :
[ORG Riverside United] 3 [ORG Harlow Athletic] 1
[ORG Ashford City] 0 [ORG Port Wellan] 0

#DOC train
TENNIS - [PER NAKAMURA] STUNS TOP SEED IN [LOC MELBOURNE] .
[MISC Japanese] qualifier [PER Yuki Nakamura] knocked out top seed [PER Elena Varga] 6-4 3-6 7-5 on Tuesday at the [MISC Southern Open] in [LOC Melbourne] .
[PER Varga] , the [MISC Hungarian] who won the title last year , struggled with her serve throughout the match .
[PER Nakamura] , ranked 112th in the world , had never beaten a top-ten player before .
" I just tried to stay calm and hit the ball , " she said .
She will next play [PER Sophie Lindqvist] of [LOC Sweden] , who beat [MISC American] [PER Dana Brooks] in straight sets .
In the men 's draw , fourth seed [PER Mateo Alvarez] of [LOC Argentina] retired with a wrist injury while trailing [PER Karl Brandt] .
The tournament , sponsored by [ORG Coastline Telecom] , offers total prize money of 2.4 million [MISC Australian] dollars .
Rain delayed play on the outer courts for almost three hours .
The women 's final is scheduled for Saturday evening .

#DOC train
ATHLETICS - [MISC KENYAN] [PER OTIENO] WINS [MISC BERLIN MARATHON] .
[MISC Kenyan] runner [PER David Otieno] won the [MISC Berlin Marathon] on Sunday in two hours , four minutes and 12 seconds .
[PER Otieno] broke away from [MISC Ethiopian] rival [PER Haile Gebru] after 35 kilometres and was never caught .
[PER Gebru] finished second , 40 seconds behind , with [PER Stefan Maier] of [LOC Germany] third .
In the women 's race , [PER Grace Wanjiru] recorded the fastest time of the year .
Organisers said more than 40,000 runners took part in warm and sunny conditions .
The course runs past the [LOC Brandenburg Gate] and along the banks of the [LOC Spree] .
[PER Otieno] 's coach , [PER Peter Kamau] , said the athlete would now target the [MISC Olympic Games] .
[PER Otieno] is sponsored by sportswear maker [ORG Stride Athletics Inc.] , which paid him a bonus for the win .
Last year 's winner , [PER Tadesse Bekele] , did not start because of a hamstring injury .

#DOC train
MOTOR RACING - [PER BELLINI] TAKES POLE AT [LOC MONZA] .
[MISC Italian] driver [PER Marco Bellini] took pole position for Sunday 's [MISC Italian Grand Prix] in a [ORG Vantor Racing] car .
[PER Bellini] lapped the [LOC Monza] circuit in one minute 19.8 seconds , beating [MISC British] team mate [PER James Whitfield] by a tenth of a second .
[ORG Kestrel Motorsport] 's [PER Lukas Hoffmann] will start third after a crash in the final practice session .
" The car felt perfect today , " [PER Bellini] said .
The result leaves [PER Bellini] 12 points behind championship leader [PER Whitfield] with six races remaining .
CRICKET - [LOC AUSTRALIA] BEAT [LOC INDIA] BY FIVE WICKETS .
[LOC Australia] reached their target of 241 with eight balls to spare in the second one-day international in [LOC Sydney] on Friday .
Opener [PER Ben Hargreaves] made 88 , while [MISC Indian] spinner [PER Ravi Menon] took three wickets for 41 runs .
The five-match series is now level at 1-1 .
The third match will be played in [LOC Perth] on Tuesday .

#DOC dev
SOCCER - [LOC NORWAY] HOLD [LOC SPAIN] IN [MISC WORLD CUP] QUALIFIER .
[LOC Norway] held [LOC Spain] to a 1-1 draw in a [MISC World Cup] qualifying match in [LOC Oslo] on Wednesday .
[PER Erik Solberg] gave the home side the lead in the 23rd minute with a header from a corner .
[LOC Spain] equalised ten minutes from time when substitute [PER Diego Navarro] curled a free kick into the top corner .
[MISC Spanish] coach [PER Ignacio Ruiz] said he was disappointed with the result but proud of his players .
[LOC Norway] remain top of the group , two points ahead of [LOC Spain] and [LOC Poland] .
The stadium was full despite freezing temperatures .
Meanwhile , [ORG Riverside United] said striker [PER Tomas Ferreira] would miss three weeks with a knee injury .
[PER Yuki Nakamura] , who reached the quarter-finals in [LOC Melbourne] , has withdrawn from next week 's tournament in [LOC Tokyo] .
Qualifying for the [MISC European Championship] resumes in March .

#DOC train
[ORG Hartwell Industries Ltd.] reported a 12 percent rise in first-half profit on Thursday , helped by strong demand for its packaging products in [LOC Europe] .
The [MISC British] company said pre-tax profit rose to 84 million pounds from 75 million a year earlier .
Chief executive [PER Margaret Ellison] said the outlook for the second half remained positive .
" Our new plant in [LOC Poland] is already running at full capacity , " [PER Ellison] said in a statement .
Shares in [ORG Hartwell] rose 3.5 percent to 412 pence in early trading in [LOC London] .
Analysts at [ORG Carrow Securities] had expected profit of around 80 million pounds .
The company raised its interim dividend by 8 percent .
[ORG Hartwell] also confirmed it was in talks to buy [ORG Lindgren Packaging AB] , a [MISC Swedish] rival , for an undisclosed sum .
[ORG Lindgren] , based in [LOC Gothenburg] , employs about 1,200 people .
A spokesman for [ORG Lindgren Packaging AB] declined to comment .

#DOC train
[ORG Nimbus Data Corp.] said on Monday it would cut 900 jobs worldwide as it shifts its focus to cloud storage .
The company , based in [LOC Seattle] , employs about 14,000 people .
Most of the cuts will fall in [LOC Texas] and [LOC Ireland] , according to a memo sent to staff by chief executive [PER Raymond Cho] .
[ORG Nimbus] launched its [MISC SkyVault] storage service last year and has since signed contracts with [ORG Orion Freight Inc.] and [ORG Pellham Bank] .
Sales of its older hardware products fell 18 percent in the last quarter .
[PER Cho] , who joined from rival [ORG Helix Systems] in 2019 , said the company had to act quickly .
The [ORG Technical Staff Union] said it would seek urgent talks with management .
[ORG Nimbus] shares closed 2 percent lower on the [ORG Nasdaq] .
Rival [ORG Helix Systems] reported record sales of its [MISC Helix One] server last month .
Industry analysts expect further job cuts across the sector this year .

#DOC train
Oil prices rose on Wednesday after [ORG OPEC] members agreed to extend output cuts until the end of the year .
Benchmark crude for March delivery gained 1.20 dollars to 82.40 dollars a barrel .
Energy ministers met for two days in [LOC Vienna] and issued a joint statement late on Tuesday .
[MISC Saudi] oil minister [PER Khalid al-Rashid] said the market was still fragile .
[ORG Northsea Petroleum plc] said it would resume production at two platforms off the coast of [LOC Scotland] next month .
The company halted output in January after a fire on one of the platforms .
In [LOC Asia] , [ORG Sakura Trading Co.] said it had signed a ten-year deal to import liquefied natural gas from [LOC Qatar] .
[MISC Japanese] utilities have increased gas purchases since several nuclear plants were shut .
Gold fell to a two-week low in [LOC London] as the [LOC U.S.] dollar strengthened .
Copper prices were little changed on the [ORG London Metal Exchange] .

#DOC train
Carmaker [ORG Falken Motoren AG] said on Friday its sales in [LOC China] rose 22 percent in the first quarter .
The [MISC German] group delivered 148,000 vehicles to [MISC Chinese] customers , led by demand for its [MISC Falken E4] electric saloon .
Sales in [LOC Germany] itself slipped 3 percent , while the [LOC United States] was flat .
Finance director [PER Klaus Werner] said the company would build a second factory near [LOC Shanghai] .
The plant will be run jointly with local partner [ORG Jiangnan Auto Group] .
[ORG Falken] also said it was recalling about 30,000 cars because of a faulty brake sensor .
The recall affects models built between March and July last year .
Retailer [ORG Bramley & Stone Ltd.] said like-for-like sales fell 4 percent over the holiday period .
Chairman Sir [PER Anthony Bramley] said the company would close 15 stores in [LOC Scotland] and northern [LOC England] .
Shares in [ORG Bramley & Stone] fell 6 percent .

#DOC dev
[ORG Nimbus Data Corp.] agreed on Tuesday to buy [MISC Canadian] software firm [ORG Birchline Analytics Inc.] for 1.1 billion dollars .
The deal will give [ORG Nimbus] a foothold in [LOC Canada] and access to about 400 corporate customers .
[PER Raymond Cho] said the two companies would be fully integrated by the end of next year .
[ORG Birchline] founder [PER Nadia Petrova] will join the [ORG Nimbus] board .
The offer represents a premium of 35 percent over [ORG Birchline] 's closing share price on Monday .
The deal still needs approval from regulators in [LOC Ottawa] and [LOC Brussels] .
[ORG Hartwell Industries Ltd.] , meanwhile , completed its purchase of [ORG Lindgren Packaging AB] .
Trading volumes were light ahead of a holiday on Thursday .
The [ORG Toronto Stock Exchange] index rose 0.4 percent .
Investors are waiting for [LOC U.S.] inflation data due on Friday .

#DOC train
The ferry from [LOC Piraeus] to [LOC Santorini] takes about eight hours , though faster boats make the trip in five .
Most visitors arrive in [LOC Greece] between June and September , when the islands are at their busiest .
Local guide [PER Nikos Andreou] recommends visiting in May , when the weather is mild and the beaches are quiet .
The island 's airport is served by [ORG Hellas Air] and several charter carriers .
In the village of [LOC Oia] , hundreds of people gather each evening to watch the sunset .
Many restaurants print their menus in [MISC Greek] , [MISC English] and [MISC German] .
A short walk leads to the ruins of [LOC Akrotiri] , an ancient town buried by a volcanic eruption .
Travel writer [PER Clara Jensen] describes the island as " crowded but unforgettable " in her book [MISC Islands of Light] .
Hotel prices can double in August .
Several operators , including [ORG Blue Horizon Tours Ltd.] , offer day trips to nearby [LOC Crete] .

#DOC train
Trekkers heading for [LOC Mount Everest] usually begin their journey in [LOC Kathmandu] , the capital of [LOC Nepal] .
From there , a short flight to [LOC Lukla] saves several days of walking .
The trail follows the [LOC Dudh Kosi] river north through forests of pine and rhododendron .
[MISC Sherpa] guides carry much of the equipment and set up camp each night .
[PER Pemba Dorje] , who has led groups in the region for 20 years , says acclimatisation is the key to a safe trek .
Most groups rest for two nights at [LOC Namche Bazaar] before continuing to higher altitudes .
Permits cost about 50 dollars and can be bought in the capital .
The [ORG Himalayan Rescue Association] runs a small clinic in the village of [LOC Pheriche] .
Visitors who prefer a gentler route can walk around the [LOC Annapurna] range instead .
The best months for trekking are October and November , after the monsoon .

#DOC train
A new night train between [LOC Vienna] and [LOC Paris] will begin running in December , the [MISC Austrian] rail operator [ORG Alpenbahn] said .
The journey will take about 14 hours , with stops in [LOC Salzburg] , [LOC Munich] and [LOC Strasbourg] .
Passengers can choose between seats , couchettes and private sleeping cabins with showers .
[ORG Alpenbahn] spokeswoman [PER Anna Gruber] said demand for overnight trains had grown strongly since 2019 .
Environmental groups such as [ORG Greenrail Europe] have long campaigned for more night services .
Tickets will go on sale in October through the [ORG Alpenbahn] website and at stations in [LOC Austria] , [LOC Germany] and [LOC France] .
The route crosses the [LOC Rhine] near [LOC Kehl] before entering [MISC French] territory .
A similar service linking [LOC Brussels] and [LOC Prague] was launched last spring .
Rail fans say the scenery along the [LOC Danube] valley is the highlight of the trip .
[PER Gruber] said the company hoped to add a route to [LOC Rome] by 2027 .

#DOC train
[LOC Lisbon] has become one of [LOC Europe] 's most popular destinations for short city breaks .
The old district of [LOC Alfama] climbs steeply from the banks of the [LOC Tagus] up to [LOC Sao Jorge Castle] .
Yellow trams , many built in the 1930s , rattle through the narrow streets .
Chef [PER Rui Carvalho] , whose restaurant [ORG Casa do Mar] won a national award last year , says the city 's food scene has never been better .
Visitors should try the custard tarts known in [MISC Portuguese] as pasteis de nata .
Budget airline [ORG SkyHop] flies to [LOC Lisbon] from [LOC Manchester] , [LOC Dublin] and [LOC Amsterdam] .
The coastal town of [LOC Cascais] is a 40-minute train ride away .
[PER Carvalho] recommends the fish market at [LOC Cais do Sodre] for an early breakfast .
Summer temperatures regularly exceed 30 degrees , so pack light clothing .
The [MISC Portuguese] tourist board expects a record 8 million visitors this year .

#DOC dev
Visitors to [LOC Iceland] can now reach the [LOC Vatnajokull] glacier by a new paved road from [LOC Reykjavik] .
The drive along the south coast takes about five hours and passes several waterfalls .
Tour operator [ORG Blue Horizon Tours Ltd.] has added three winter trips to see the northern lights .
Guide [PER Sigrun Olafsdottir] says the best views are found far from the lights of the capital .
Many guides speak [MISC English] and [MISC German] as well as [MISC Icelandic] .
Flights from [LOC London] and [LOC Copenhagen] are operated by [ORG Nordwing Airways] several times a day .
Hotel rooms near the [LOC Blue Lagoon] are often booked months in advance .
The [MISC Icelandic] krona has weakened this year , making the country cheaper for visitors .
Travellers planning to hike on [LOC Mount Hekla] should check volcanic warnings first .
[PER Clara Jensen] , whose book on the [MISC Greek] islands was a bestseller , is now writing about the far north .

#DOC train
[MISC French] President [PER Claire Dumont] arrived in [LOC Berlin] on Monday for talks with [MISC German] Chancellor [PER Heinrich Vogel] .
The two leaders are expected to discuss energy prices and a proposed [ORG European Union] defence fund .
[PER Dumont] told reporters at the airport that [LOC France] and [LOC Germany] must " speak with one voice " .
[PER Vogel] 's spokesman , [PER Martin Kruger] , said the meeting would last about three hours .
The visit is [PER Dumont] 's first to [LOC Germany] since she took office in May .
Opposition leader [PER Jean-Luc Moreau] criticised the trip , saying the president should focus on problems at home .
Farmers protested outside the chancellery , blocking traffic for several hours .
Both governments have promised to agree a common position before the summit in [LOC Brussels] next month .
[PER Dumont] will travel on to [LOC Warsaw] on Tuesday .
The [ORG Social Democrats] , junior partners in [PER Vogel] 's coalition , welcomed the visit .

#DOC train
Polls opened on Sunday in [LOC Chile] 's presidential run-off between [PER Alejandro Fuentes] and [PER Marisol Vega] .
[PER Fuentes] , a former mayor of [LOC Santiago] , led the first round with 38 percent of the vote .
[PER Vega] , who is backed by the centre-left [ORG Progressive Alliance] , has promised to raise pensions and cut fuel taxes .
More than 15 million people are eligible to vote , and voting is compulsory .
Observers from the [ORG Organization of American States] said preparations had gone smoothly .
Results are expected late on Sunday night , the electoral service said .
[PER Fuentes] cast his ballot in the coastal city of [LOC Valparaiso] , accompanied by his wife and children .
" Today the people of [LOC Chile] decide their future , " he told supporters .
Both candidates have pledged to protect the glaciers of [LOC Patagonia] from mining .
[MISC Chilean] markets are expected to react strongly to the result on Monday .

#DOC train
The [ORG United Nations Security Council] will meet on Thursday to discuss the drought in the [LOC Horn of Africa] .
[ORG UN] aid chief [PER Fatima Diallo] said more than 20 million people needed food assistance .
Rainfall in [LOC Somalia] , [LOC Ethiopia] and northern [LOC Kenya] has been below average for four seasons in a row .
[PER Diallo] , a [MISC Senegalese] diplomat , visited refugee camps near [LOC Dadaab] last week .
She urged donor countries to release funds promised at a conference in [LOC Geneva] in March .
The [ORG World Food Programme] said it had been forced to cut rations by half .
[LOC Japan] and [LOC Norway] announced new contributions of 40 million dollars each .
Aid workers say the situation is the worst in more than a decade .
[MISC British] Foreign Secretary [PER Rachel Hughes] is due to address the council .
Any resolution would need the support of all five permanent members .

#DOC train
[LOC U.S.] Senator [PER Thomas Whitaker] introduced a bill on Wednesday to expand broadband access in rural areas .
The [MISC Republican] from [LOC Montana] said millions of [MISC Americans] still lacked a reliable internet connection .
The bill has the backing of several [MISC Democrats] , including Senator [PER Linda Okafor] of [LOC Ohio] .
[PER Okafor] said the measure could reach a vote in the [ORG Senate] before the summer recess .
Under the plan , the [ORG Federal Communications Commission] would distribute 20 billion dollars in grants .
Telecom companies such as [ORG Coastline Telecom] have said they support the goal but oppose some of the rules .
The [ORG White House] has not taken a position on the bill .
Similar proposals failed in 2019 and 2021 .
[PER Whitaker] spent eight years as governor of [LOC Montana] before being elected to the [ORG Senate] .
Hearings are scheduled to begin in [LOC Washington] next month .

#DOC dev
[MISC German] Chancellor [PER Heinrich Vogel] won a confidence vote in parliament on Friday by 371 votes to 315 .
The vote followed weeks of disagreement within the coalition over the budget .
[PER Vogel] thanked the [ORG Social Democrats] and the [ORG Greens] for their support .
Opposition leader [PER Friedrich Lang] called the result " a victory without a future " .
[MISC French] President [PER Claire Dumont] telephoned [PER Vogel] to congratulate him .
The chancellor will now present a revised budget to the [ORG Bundestag] in September .
Meanwhile in [LOC Austria] , Foreign Minister [PER Eva Hofer] resigned after a dispute over refugee policy .
She will be replaced by [PER Stefan Leitner] , currently the ambassador to [LOC Italy] .
Protesters gathered outside the parliament in [LOC Vienna] .
The [ORG European Commission] said it was watching developments closely .

#DOC train
Astronomers using the [MISC James Webb Space Telescope] have detected water vapour in the atmosphere of a planet orbiting a nearby star .
The team , led by Dr. [PER Amara Okoye] of the [ORG University of Cambridge] , published its findings on Wednesday .
" This is the clearest signal of water we have ever seen on such a small world , " [PER Okoye] said .
The observations were made over 18 months in collaboration with researchers at [ORG NASA] and the [ORG European Space Agency] .
Scientists cautioned that the presence of water does not mean the planet could support life .
Professor [PER Lars Eriksson] of [ORG Uppsala University] , who was not involved in the study , called the result " a major step " .
The telescope was launched from [LOC French Guiana] on an [MISC Ariane 5] rocket in December 2021 .
Further observations are planned for next year .
[ORG NASA] said it would release the full data set to other researchers in the spring .

#DOC train
A new malaria vaccine developed by [ORG Veritas Biotech Inc.] cut infections by 70 percent in a trial involving 4,800 children .
The trial was carried out in [LOC Ghana] , [LOC Mali] and [LOC Tanzania] over two years .
Lead researcher [PER Kwame Asante] said the results were better than expected .
The vaccine , called [MISC MalVax-2] , will now be submitted to regulators for approval .
The [ORG World Health Organization] welcomed the results but said more data was needed .
Malaria kills more than 600,000 people a year , most of them young children in [LOC Africa] .
[ORG Veritas] has agreed to supply the vaccine at cost to low-income countries .
The company , based in [LOC Boston] , was founded in 2011 by two former [ORG Harvard University] researchers .
Production will take place at a factory in [LOC Pune] run by [ORG Deccan Pharma Ltd.] , its [MISC Indian] partner .
Side effects were mild and included fever and soreness .

#DOC train
Glaciers in the [LOC Alps] lost 4 percent of their volume last year , according to a report by [MISC Swiss] scientists .
The report , published by the [ORG Glacier Monitoring Service] in [LOC Zurich] , blamed a dry winter and a hot summer .
[PER Matthias Keller] , who has measured the [LOC Rhone Glacier] for 30 years , said the losses were " shocking " .
Some smaller glaciers have disappeared entirely .
Meltwater feeds rivers such as the [LOC Rhine] and the [LOC Po] , which supply water to millions of people .
In [LOC Greenland] , researchers from [ORG Aarhus University] recorded the earliest start to the melt season on record .
[MISC Danish] glaciologist [PER Ida Sorensen] said the ice sheet was " losing mass faster than our models predicted " .
The findings will be presented at the [MISC UN Climate Change Conference] in November .
Delegates from almost 200 countries are expected to attend .
[PER Keller] said he planned to install new measuring stations on [LOC Mont Blanc] next summer .

#DOC train
Engineers at [ORG Quantix Labs Ltd.] in [LOC Oxford] say they have built a quantum processor with 200 stable qubits .
The company 's chief scientist , [PER Priya Raman] , said the chip could solve certain chemistry problems in minutes .
Rival [ORG Helix Systems] announced a similar device , called [MISC Helix Q] , in [LOC California] last month .
Independent experts said the claims were impressive but difficult to verify .
Professor [PER Jonathan Reid] of [ORG Imperial College London] said the next step would be to publish full test results .
The project received 45 million pounds from the [MISC British] government .
[PER Raman] studied physics in [LOC Bangalore] before moving to [LOC England] in 2008 .
[ORG Quantix] plans to offer access to the processor through a cloud service next year .
The processor must be kept at temperatures close to absolute zero .
Several [MISC European] banks have already signed up to test it .

#DOC dev
A team at the [ORG University of Cambridge] has grown miniature kidneys from human stem cells .
The work , led by Professor [PER Hannah Moore] , could one day reduce the need for transplants .
The tiny organs survived for six weeks in the laboratory .
[PER Moore] 's team worked with surgeons at [ORG Addenbrooke 's Hospital] to test the tissue .
The research was funded by the [ORG Wellcome Trust] .
Separately , [ORG Veritas Biotech Inc.] said regulators in [LOC Ghana] had approved its malaria vaccine .
[PER Kwame Asante] said the first doses would be delivered before the rainy season .
[ORG NASA] postponed the launch of its new weather satellite , [MISC Skywatch-3] , from [LOC Cape Canaveral] because of high winds .
The launch has been rescheduled for Saturday morning .
[MISC American] and [MISC Japanese] engineers built the satellite 's main camera .

#DOC train
The [MISC Cannes Film Festival] opened on Tuesday with the premiere of [MISC The Silent Harbour] , a drama by [MISC Danish] director [PER Mikkel Holm] .
The film stars [PER Isabelle Laurent] as a fisherman 's widow on a remote island off [LOC Norway] .
[PER Laurent] , who won best actress at the festival three years ago , walked the red carpet alongside [PER Holm] .
Twenty-one films are competing for the [MISC Palme d'Or] this year .
The jury is chaired by [MISC American] actor [PER Richard Coleman] .
[MISC South Korean] director [PER Park Ji-hoon] returns with a thriller set in [LOC Seoul] .
Security on the seafront has been tightened , with extra police patrols .
Streaming company [ORG Flicker Media Inc.] has bought the worldwide rights to three films in the competition .
Festival director [PER Thierry Blanc] said he was pleased to see so many first-time filmmakers .
The festival ends on May 25 .

#DOC train
[MISC Irish] band [ORG The Harbour Lights] will begin a 40-date world tour in [LOC Dublin] next March .
The tour , promoting their fourth album [MISC Northern Skies] , will visit [LOC Europe] , [LOC North America] and [LOC Australia] .
Singer [PER Aoife Brennan] said the group had written most of the songs during a year spent in [LOC Berlin] .
Tickets sold out within hours , according to promoter [ORG LiveStage Entertainment] .
The band won two [MISC Grammy] awards last year , including best rock album .
Guitarist [PER Declan Walsh] is recovering from a hand injury but will play on the tour .
Elsewhere , the [ORG Vienna Philharmonic] announced that [MISC Finnish] conductor [PER Aino Virtanen] would lead its [MISC New Year 's Concert] .
[PER Virtanen] called the invitation " the greatest honour of my career " .
The concert is broadcast to more than 90 countries .
[PER Virtanen] , 41 , studied in [LOC Helsinki] and [LOC Vienna] .

#DOC train
A previously unknown painting by [MISC Dutch] artist [PER Pieter van Aalst] has been found in a farmhouse in [LOC Belgium] .
The work , which shows a winter scene on a frozen river , will be sold at auction in [LOC London] next month .
Auction house [ORG Whitcombe & Sons] estimates it could fetch up to 3 million pounds .
Experts at the [ORG Rijksmuseum] in [LOC Amsterdam] confirmed the painting was genuine after months of tests .
The farmer who found it , [PER Luc Peeters] , said it had hung in his kitchen for decades .
The novel [MISC A House by the Sea] by [MISC Nigerian] writer [PER Chioma Eze] has won this year 's [MISC Booker Prize] .
[PER Eze] , 34 , is the youngest winner in more than a decade .
The book was first written in [MISC Igbo] and later translated into [MISC English] by the author herself .
Judges praised its " quiet , unforgettable " portrait of family life in [LOC Lagos] .
Sales of the book have risen tenfold since the shortlist was announced .

#DOC train
More than 3,000 shows will be staged at this year 's [MISC Edinburgh Festival Fringe] , organisers said on Thursday .
Comedians , dancers and theatre groups from 58 countries have registered .
[MISC Scottish] actor [PER Callum Reid] will open the festival with a one-man play about the poet [PER Robert Burns] .
Organiser [PER Fiona McLeod] said ticket sales were already ahead of last year .
Many performances will be in [MISC Gaelic] , with [MISC English] subtitles .
A new venue has opened in a former church near [LOC Princes Street] .
The [ORG Royal Lyceum Theatre] will host a season of plays by young [MISC Ukrainian] writers .
Hotel prices in [LOC Edinburgh] have risen sharply during the festival month .
Extra trains will run from [LOC Glasgow] and [LOC Newcastle] every evening .
The festival ends on the last Monday of August .

#DOC dev
[PER Isabelle Laurent] will star as the singer [PER Edith Piaf] in a new film by director [PER Mikkel Holm] .
Filming will begin in [LOC Paris] in the autumn and move to [LOC Marseille] in the new year .
The project is backed by [ORG Flicker Media Inc.] and the [MISC French] national film agency .
[PER Holm] said he had wanted to make the film since he was a student in [LOC Copenhagen] .
The script will be in [MISC French] , with some scenes in [MISC English] .
[ORG The Harbour Lights] played to 60,000 fans at [LOC Wembley Stadium] on Saturday night .
The concert raised money for the children 's charity [ORG Bright Futures] .
[MISC Brazilian] novelist [PER Beatriz Lima] won the [MISC Golden Quill Award] for her debut novel [MISC The River Keeper] .
The prize is worth 50,000 euros .
[PER Chioma Eze] , last year 's winner , presented the award in [LOC Rome] .
"""


def parse_sentence(line: str) -> list[tuple[str, str]]:
    """Turn one marked-up sentence into (token, IOB2 tag) pairs."""
    out: list[tuple[str, str]] = []
    ent_type: str | None = None
    first = False
    for raw in line.split():
        if raw.startswith("[") and raw[1:] in TYPES:
            if ent_type is not None:
                raise ValueError(f"nested entity in: {line}")
            ent_type, first = raw[1:], True
            continue
        tok = raw
        close = False
        if ent_type is not None and tok.endswith("]"):
            tok, close = tok[:-1], True
        if not tok or "[" in tok or "]" in tok:
            raise ValueError(f"bad token {raw!r} in: {line}")
        if ent_type is None:
            out.append((tok, "O"))
        else:
            out.append((tok, ("B-" if first else "I-") + ent_type))
            first = False
        if close:
            ent_type = None
    if ent_type is not None:
        raise ValueError(f"unclosed entity in: {line}")
    return out


def main() -> None:
    here = Path(__file__).resolve().parent
    docs: dict[str, list[list[list[tuple[str, str]]]]] = {"train": [], "dev": []}
    current: list[list[tuple[str, str]]] | None = None
    for line in SOURCE.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#DOC "):
            current = []
            docs[line.split()[1]].append(current)
            continue
        assert current is not None
        current.append(parse_sentence(line))
    for split, doc_list in docs.items():
        lines: list[str] = []
        for doc in doc_list:
            lines += ["-DOCSTART- -X- -X- O", ""]
            for sent in doc:
                lines += [f"{tok} {tag}" for tok, tag in sent]
                lines.append("")
        (here / f"{split}.iob").write_text("\n".join(lines) + "\n", encoding="utf-8")
        n_sent = sum(len(d) for d in doc_list)
        print(f"{split}.iob: {len(doc_list)} documents, {n_sent} sentences")


if __name__ == "__main__":
    main()
